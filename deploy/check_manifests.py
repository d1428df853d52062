"""Static checks of deploy/compose and deploy/k8s (no Docker engine or cluster needed).

Usage: python3 deploy/check_manifests.py   (any Python with PyYAML)
Checks that every YAML document parses, that Kubernetes objects name apiVersion, kind
and metadata, that the compose services' environments resolve, and that every OTA_ name
used is one the settings modules read. Exits 1 with the problems listed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]  # PyYAML, any Python

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [
    "ota/settings.py",
    "ota/client_security.py",
    "ota/dev_secrets.py",
    "ota/object_store.py",
] + [f"{service}/settings.py" for service in ("workers", "gateway", "download_edge", "scheduler")]
SETTING_CALL = re.compile(r'env\.\w+\(\s*"([A-Z0-9_]+)"')
# A secret (env.secret) may also come from the file its OTA_<NAME>_FILE names (ota/env.py).
SECRET_CALL = re.compile(r'env\.secret\(\s*"([A-Z0-9_]+)"')
# The device broker (Java) reads its settings in BrokerConfig.fromEnv: in.port("OTA_...").
BROKER_CONFIG = "deploy/broker/src/main/java/io/otarollout/broker/BrokerConfig.java"
BROKER_CALL = re.compile(r'in\.\w+\(\s*"(OTA_[A-Z0-9_]+)"')
OTA_NAME = re.compile(r"\bOTA_[A-Z0-9_]+")


def known_names() -> set[str]:
    text = "\n".join((ROOT / path).read_text() for path in SETTINGS)
    names = {"OTA_" + name for name in SETTING_CALL.findall(text)}
    names |= {f"OTA_{name}_FILE" for name in SECRET_CALL.findall(text)}
    broker = ROOT / BROKER_CONFIG
    if broker.exists():
        names |= set(BROKER_CALL.findall(broker.read_text()))
    return names


def check() -> tuple[list[str], int]:
    problems: list[str] = []
    documents = 0
    known = known_names()
    files = sorted((ROOT / "deploy/compose").glob("*.yml")) + sorted(
        (ROOT / "deploy/k8s").glob("*.yaml")
    )
    for path in files:
        text = path.read_text()
        name = path.relative_to(ROOT)
        try:
            parsed = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{name}: does not parse: {exc}")
            continue
        documents += len(parsed)
        if path.parent.name == "k8s" and path.name != "kustomization.yaml":
            for doc in parsed:
                missing = {"apiVersion", "kind", "metadata"} - doc.keys()
                if missing:
                    problems.append(f"{name}: a document lacks {sorted(missing)}")
        if path.suffix == ".yml":
            for service, spec in parsed[0]["services"].items():
                if not isinstance(spec.get("environment", {}), dict):
                    problems.append(f"{name}: {service} environment is not a mapping")
        problems += [
            f"{name}: {var} is not read by any settings module"
            for var in sorted(set(OTA_NAME.findall(text)) - known)
        ]
    return problems, documents


def main() -> int:
    problems, documents = check()
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{documents} documents checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
