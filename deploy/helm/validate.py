"""Static, strict checks of everything this project would apply to a cluster.

Usage: .tools/venv/bin/python deploy/helm/validate.py   (after deploy/tools/install;
       `make lint` runs both)

No cluster or container runtime is available where this runs, so this is what stands in
for `kubectl apply --dry-run=server`:
1. `helm lint --strict` and `helm template` of the chart for every value set in
   deploy/helm/values/ (minimal, production with everything on, the broker in http auth
   mode, EMQX broker), plus the plain manifests of deploy/k8s.
2. Every object against the Kubernetes OpenAPI schemas of the oldest and newest supported
   versions (kubernetes-validate, strict: unknown fields are errors), and every custom
   resource (Strimzi, Prometheus Operator, KEDA) against the openAPIV3Schema of its CRD,
   vendored in deploy/helm/schemas/ and made strict the same way. A kind with no schema
   is an error, not a warning.
3. Pod Security "restricted" and the project's own rules on every pod template:
   RuntimeDefault seccomp, non-root, no privilege escalation, all capabilities dropped,
   read-only root filesystem, no service-account token, memory limits, httpGet or
   tcpSocket probes (never exec), images by tag or digest (never :latest).
4. Every OTA_* name in the rendered objects is read by a service (check_manifests.py).
5. checkov on all of it; each finding must be listed, with its reason, in
   deploy/helm/checkov-skips.yaml, and every listed skip must still be needed.
6. hadolint on the Dockerfiles (deploy/docker/Dockerfile*).
Exits 1 naming every problem.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,import-not-found,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,import-not-found,unused-ignore]
import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "deploy"))
import check_manifests  # noqa: E402  (deploy/ is not a package)

CHART = HERE / "ota-rollout"
VALUE_SETS = sorted((HERE / "values").glob("*.yaml"))
SCHEMAS = HERE / "schemas"
SKIPS = HERE / "checkov-skips.yaml"
K8S_DIR = ROOT / "deploy/k8s"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin/helm"
VENV_BIN = TOOLS / "venv/bin"
# The chart's kubeVersion floor and kubernetes-validate's newest schemas.
KUBE_VERSIONS = ("1.30", "1.37")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}

Doc = dict[str, Any]


def run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


# ------------------------------------------------------------------ rendering


def render(values: Path, problems: list[str]) -> list[Doc]:
    lint = run([str(HELM), "lint", "--strict", str(CHART), "-f", str(values)])
    if lint.returncode != 0:
        problems.append(f"helm lint {values.name}:\n{lint.stdout}{lint.stderr}")
    done = run([str(HELM), "template", "ota", str(CHART), "-n", "ota", "-f", str(values)])
    if done.returncode != 0:
        problems.append(f"helm template {values.name}: {done.stderr.strip()}")
        return []
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def plain_manifests() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ------------------------------------------------------------------ schemas


def strict(schema: Any) -> Any:
    """A CRD's structural schema with unknown fields refused, as the API server prunes
    (and `kubectl apply --validate=strict` refuses) them."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        # OpenAPI 3.0's nullable has no JSON Schema meaning: allow null explicitly.
        if schema.pop("nullable", False) and "type" in schema:
            schema["type"] = [schema["type"], "null"]
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def load_crd_schemas() -> dict[tuple[str, str], Any]:
    schemas: dict[tuple[str, str], Any] = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        raw = json.loads(path.read_text())
        source = raw.pop("x-source")
        schemas[(source["apiVersion"], source["kind"])] = strict(raw)
    return schemas


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def validate_schema(doc: Doc, crds: dict[tuple[str, str], Any]) -> Iterator[str]:
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in crds:
        name = doc.get("metadata", {}).get("name", "")
        if not DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
            yield f"{name_of(doc)}: metadata.name is not a DNS subdomain"
        validator = jsonschema.Draft7Validator(crds[key])
        for error in validator.iter_errors(doc):
            path = ".".join(str(p) for p in error.absolute_path)
            yield f"{name_of(doc)}: {path}: {error.message}"
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{name_of(doc)}: no schema for {key[0]} {key[1]} (Kubernetes {version} or vendored CRDs)"
            return
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            yield f"{name_of(doc)}: Kubernetes {version}: {path}: {exc.message}"


# ------------------------------------------------------------------ pod rules


def pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") not in WORKLOADS:
        return None
    spec: Doc = doc.get("spec", {})
    if doc["kind"] == "Pod":
        return spec
    template: Doc = spec.get("template", {})
    if doc["kind"] == "Job":
        return template.get("spec")
    return template.get("spec")


def pod_rules(doc: Doc) -> Iterator[str]:
    spec = pod_spec(doc)
    if spec is None:
        return
    where = name_of(doc)
    is_test = doc.get("kind") == "Pod"
    pod_sc = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        yield f"{where}: automountServiceAccountToken must be false"
    if pod_sc.get("runAsNonRoot") is not True:
        yield f"{where}: securityContext.runAsNonRoot must be true"
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        yield f"{where}: securityContext.seccompProfile.type must be RuntimeDefault"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            yield f"{where}: {field} is not allowed"
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            yield f"{where}: hostPath volume {volume.get('name')} is not allowed"
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        cwhere = f"{where} container {container.get('name')}"
        sc = container.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{cwhere}: allowPrivilegeEscalation must be false"
        if sc.get("readOnlyRootFilesystem") is not True:
            yield f"{cwhere}: readOnlyRootFilesystem must be true"
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            yield f"{cwhere}: capabilities must drop ALL"
        if sc.get("capabilities", {}).get("add"):
            yield f"{cwhere}: capabilities.add is not allowed"
        if sc.get("privileged"):
            yield f"{cwhere}: privileged is not allowed"
        image = str(container.get("image", ""))
        if "@sha256:" not in image and (
            ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        ):
            yield f"{cwhere}: image {image!r} needs a tag (not latest) or a digest"
        resources = container.get("resources", {})
        if "memory" not in resources.get("limits", {}) or "cpu" not in resources.get(
            "requests", {}
        ):
            yield f"{cwhere}: needs a memory limit and a CPU request"
        probes = ("livenessProbe", "readinessProbe", "startupProbe")
        for probe in probes:
            if "exec" in container.get(probe, {}):
                yield f"{cwhere}: {probe} runs a command; use httpGet or tcpSocket"
        if not is_test and not all(p in container for p in probes[:2]):
            yield f"{cwhere}: needs liveness and readiness probes"


def setting_names(docs: list[Doc], known: set[str]) -> Iterator[str]:
    text = yaml.safe_dump_all(docs)
    for name in sorted(set(check_manifests.OTA_NAME.findall(text)) - known):
        yield f"{name} is not read by any service"


# ------------------------------------------------------------------ checkov, hadolint


def checkov(rendered: dict[str, list[Doc]], problems: list[str]) -> int:
    """Runs checkov on every rendered set; returns the number of findings it made."""
    listed = yaml.safe_load(SKIPS.read_text()) or []
    skips: dict[tuple[str, str], str] = {}
    for entry in listed:
        if not entry.get("reason"):
            problems.append(f"checkov-skips.yaml: {entry.get('check')} has no reason")
        for resource in entry.get("resources", ["*"]):
            skips[(entry["check"], resource)] = entry.get("reason", "")
    used: set[tuple[str, str]] = set()
    findings = 0
    with tempfile.TemporaryDirectory() as tmp:
        for label, docs in rendered.items():
            (Path(tmp) / f"{label}.yaml").write_text(yaml.safe_dump_all(docs))
        done = run(
            [
                str(VENV_BIN / "checkov"),
                "-d",
                tmp,
                "--framework",
                "kubernetes",
                "--quiet",
                "-o",
                "json",
            ]
        )
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            problems.append(f"checkov gave no report: {done.stderr.strip()[-2000:]}")
            return 0
    for failed in report.get("results", {}).get("failed_checks", []):
        findings += 1
        check = failed["check_id"]
        # resource is "Kind.namespace.name"; match the skip list on Kind/name patterns.
        kind, _, rest = failed["resource"].partition(".")
        resource = f"{kind}/{rest.split('.', 1)[-1]}"
        match = next(
            (
                key
                for key in ((check, resource), (check, f"{kind}/*"), (check, "*"))
                if key in skips
            ),
            None,
        )
        if match is None:
            where = Path(failed["file_path"]).stem
            problems.append(f"checkov {check} ({failed['check_name']}): {resource} in {where}")
        else:
            used.add(match)
    problems += [
        f"checkov-skips.yaml: {check} for {resource} no longer matches a finding: remove it"
        for check, resource in sorted(set(skips) - used)
    ]
    return findings


def hadolint(problems: list[str]) -> int:
    docker = ROOT / "deploy/docker"
    files = sorted(str(p) for p in docker.glob("Dockerfile*") if not p.name.endswith("ignore"))
    done = run([str(VENV_BIN / "hadolint"), "--failure-threshold", "info", *files])
    if done.returncode != 0:
        problems.append(f"hadolint:\n{done.stdout}{done.stderr}")
    return len(files)


# ------------------------------------------------------------------ main


def main() -> int:
    missing = [
        str(p) for p in (HELM, VENV_BIN / "checkov", VENV_BIN / "hadolint") if not p.exists()
    ]
    if missing:
        print(f"validate: missing {missing}: run deploy/tools/install", file=sys.stderr)
        return 1
    problems: list[str] = []
    crds = load_crd_schemas()
    known = check_manifests.known_names()
    rendered: dict[str, list[Doc]] = {}
    for values in VALUE_SETS:
        rendered[f"chart-{values.stem}"] = render(values, problems)
    rendered["k8s"] = plain_manifests()
    for label, docs in rendered.items():
        for doc in docs:
            problems += [f"{label}: {line}" for line in validate_schema(copy.deepcopy(doc), crds)]
            problems += [f"{label}: {line}" for line in pod_rules(doc)]
        problems += [f"{label}: {line}" for line in setting_names(docs, known)]
    findings = checkov(rendered, problems)
    dockerfiles = hadolint(problems)
    for line in problems:
        print(f"validate: {line}", file=sys.stderr)
    objects = sum(len(docs) for docs in rendered.values())
    print(
        f"validate: {len(VALUE_SETS)} value sets + deploy/k8s, {objects} objects against "
        f"Kubernetes {' and '.join(KUBE_VERSIONS)} and {len(crds)} CRD schemas; checkov "
        f"findings {findings} (all listed in checkov-skips.yaml unless named above); "
        f"hadolint {dockerfiles} Dockerfiles; {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
