"""The topic table (deploy/topics.toml): load it, and generate or check its copies.

Usage: python3 deploy/topics.py --check   (in `make lint`: exits 1 naming every drift)
       python3 deploy/topics.py --write   (rewrites the generated files and blocks)

Generated from the table: the topic block of deploy/compose/create-topics.sh,
deploy/k8s/kafka-topics.yaml and deploy/helm/ota-rollout/files/topics.json. Checked against
it: the topic names in ota/settings.py and every OTA_PARTITIONS default in the deploy files.
deploy/local/create_topics.py imports this module and reads the table at run time.
Standard library only (tomllib), so any Python 3.11 runs it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "deploy/topics.toml"
COMPOSE_SCRIPT = ROOT / "deploy/compose/create-topics.sh"
K8S_TOPICS = ROOT / "deploy/k8s/kafka-topics.yaml"
CHART_TOPICS = ROOT / "deploy/helm/ota-rollout/files/topics.json"
# The plain manifests' Strimzi cluster (a Kafka named ota-kafka in namespace kafka); the
# chart takes both from its values.
K8S_NAMESPACE = "kafka"
K8S_CLUSTER = "ota-kafka"
# Strimzi 1.0 serves KafkaTopic only as v1 (v1beta2 was removed).
STRIMZI_API = "kafka.strimzi.io/v1"
BEGIN = "# BEGIN topics: generated from deploy/topics.toml by deploy/topics.py --write"
END = "# END topics"
POLICIES = ("delete", "compact")


@dataclass(frozen=True)
class Topic:
    name: str
    cleanup_policy: str
    retention_ms: int | None
    purpose: str

    def config(self) -> dict[str, str]:
        """The topic's Kafka configuration, as kafka-topics.sh and the admin API take it."""
        config = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


@dataclass(frozen=True)
class Sizing:
    partitions: int
    replicas: int
    min_insync_replicas: int | None


@dataclass(frozen=True)
class Table:
    development: Sizing
    production: Sizing
    topics: tuple[Topic, ...]


def _int(raw: object, where: str, minimum: int = 1) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < minimum:
        raise ValueError(f"{where}: expected an integer >= {minimum}, got {raw!r}")
    return raw


def _sizing(raw: object, where: str) -> Sizing:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: missing table")
    insync = raw.get("min_insync_replicas")
    return Sizing(
        partitions=_int(raw.get("partitions"), f"{where}.partitions"),
        replicas=_int(raw.get("replicas"), f"{where}.replicas"),
        min_insync_replicas=None
        if insync is None
        else _int(insync, f"{where}.min_insync_replicas"),
    )


def _topic(raw: dict[str, object], index: int) -> Topic:
    where = f"topic[{index}]"
    unknown = set(raw) - {"name", "cleanup_policy", "retention_ms", "purpose"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    name, policy, purpose = raw.get("name"), raw.get("cleanup_policy"), raw.get("purpose", "")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name):
        raise ValueError(f"{where}: name must be lower-case letters, digits, '.' and '-'")
    if policy not in POLICIES:
        raise ValueError(f"{name}: cleanup_policy must be one of {POLICIES}")
    retention = raw.get("retention_ms")
    if policy == "delete" and retention is None:
        raise ValueError(f"{name}: a 'delete' topic names its retention_ms")
    if policy == "compact" and retention is not None:
        raise ValueError(f"{name}: retention_ms means nothing for a compacted topic")
    return Topic(
        name=name,
        cleanup_policy=str(policy),
        retention_ms=None if retention is None else _int(retention, f"{name}.retention_ms"),
        purpose=str(purpose),
    )


def load(path: Path = TABLE) -> Table:
    raw = tomllib.loads(path.read_text())
    topics = tuple(_topic(entry, i) for i, entry in enumerate(raw.get("topic", [])))
    names = [t.name for t in topics]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{path.name}: topic names must be present and distinct")
    return Table(
        development=_sizing(raw.get("development"), "development"),
        production=_sizing(raw.get("production"), "production"),
        topics=topics,
    )


# ------------------------------------------------------------------ generated copies


def compose_block(table: Table) -> str:
    lines = [BEGIN]
    lines += [
        f"create {t.name} " + " ".join(f"{k}={v}" for k, v in t.config().items())
        for t in table.topics
    ]
    lines.append(END)
    return "\n".join(lines)


def k8s_topics(table: Table) -> str:
    size = table.production
    out = [
        "# Generated from deploy/topics.toml by deploy/topics.py --write: edit the table, not",
        "# this file. The platform's topics as Strimzi KafkaTopic objects (needs the Strimzi",
        f"# operator and a Kafka cluster named {K8S_CLUSTER} in namespace {K8S_NAMESPACE}).",
        "# partitions = OTA_PARTITIONS in config.yaml. Without Strimzi, create the same topics",
        f"# with deploy/compose/create-topics.sh (REPLICATION_FACTOR={size.replicas},"
        f" OTA_PARTITIONS={size.partitions}).",
    ]
    for topic in table.topics:
        config = topic.config()
        if size.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(size.min_insync_replicas)
        out += [
            "---",
            f"# {topic.purpose}",
            f"apiVersion: {STRIMZI_API}",
            "kind: KafkaTopic",
            "metadata:",
            f"  name: {topic.name}",
            f"  namespace: {K8S_NAMESPACE}",
            "  labels:",
            f"    strimzi.io/cluster: {K8S_CLUSTER}",
            "spec:",
            f"  topicName: {topic.name}",
            f"  partitions: {size.partitions}",
            f"  replicas: {size.replicas}",
            "  config:",
        ]
        # Quoted: Strimzi passes strings through to Kafka as they are.
        out += [f'    {key}: "{value}"' for key, value in sorted(config.items())]
    return "\n".join(out) + "\n"


def chart_topics(table: Table) -> str:
    """The chart reads this with .Files.Get; sizes come from its values (kafka.*)."""
    document = {
        "_comment": "generated from deploy/topics.toml by deploy/topics.py --write",
        "topics": [{"name": t.name, "config": t.config()} for t in table.topics],
    }
    return json.dumps(document, indent=2) + "\n"


def _with_compose_block(text: str, block: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{COMPOSE_SCRIPT.name}: the BEGIN/END topics lines are missing")
    return text[:start] + block + text[end + len(END) :]


def generated(table: Table) -> dict[Path, Callable[[str], str]]:
    """File -> function from its current text to the text it must have."""
    return {
        COMPOSE_SCRIPT: lambda text: _with_compose_block(text, compose_block(table)),
        K8S_TOPICS: lambda _text: k8s_topics(table),
        CHART_TOPICS: lambda _text: chart_topics(table),
    }


# ------------------------------------------------------------------ checked copies

# (file, pattern whose group 1 is a partition count, which sizing it must equal)
PARTITION_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("deploy/k8s/config.yaml", r'OTA_PARTITIONS:\s*"(\d+)"', "production"),
    ("deploy/helm/ota-rollout/values.yaml", r"\n  partitions:\s*(\d+)", "production"),
    ("deploy/compose/docker-compose.yml", r"OTA_PARTITIONS:-(\d+)\}", "development"),
    ("deploy/compose/env.example", r"OTA_PARTITIONS=(\d+)", "development"),
    ("deploy/compose/create-topics.sh", r"OTA_PARTITIONS:-(\d+)\}", "development"),
)


def drift(table: Table) -> list[str]:
    problems: list[str] = []
    for path, render in generated(table).items():
        name = path.relative_to(ROOT)
        current = path.read_text() if path.exists() else ""
        try:
            if render(current) != current:
                problems.append(
                    f"{name}: differs from deploy/topics.toml (run deploy/topics.py --write)"
                )
        except ValueError as exc:
            problems.append(str(exc))
    settings = (ROOT / "ota/settings.py").read_text()
    in_code = set(re.findall(r': str = "(ota\.[a-z.-]+)"', settings))
    in_table = {t.name for t in table.topics}
    if in_code != in_table:
        problems.append(
            f"ota/settings.py names topics {sorted(in_code - in_table)} the table lacks, "
            f"the table has {sorted(in_table - in_code)} the code does not use"
        )
    for file, pattern, profile in PARTITION_SETTINGS:
        path = ROOT / file
        if not path.exists():
            continue
        want = getattr(table, profile).partitions
        found = [int(n) for n in re.findall(pattern, path.read_text())]
        if not found:
            problems.append(f"{file}: no partition count found (pattern {pattern!r})")
        problems += [
            f"{file}: OTA_PARTITIONS {n} differs from the table's {profile} partitions {want}"
            for n in found
            if n != want
        ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if any copy drifted")
    mode.add_argument("--write", action="store_true", help="rewrite the generated copies")
    args = parser.parse_args()
    try:
        table = load()
        if args.write:
            for path, render in generated(table).items():
                current = path.read_text() if path.exists() else ""
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render(current))
        problems = drift(table)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"topics: {exc}", file=sys.stderr)
        return 1
    for line in problems:
        print(f"topics: {line}", file=sys.stderr)
    print(f"topics: {len(table.topics)} topics, {len(problems)} drift problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
