"""The image's SBOM (deploy/sbom.cdx.json, CycloneDX 1.5 JSON): generate it or check it.

Usage: .venv/bin/python deploy/sbom.py --check   (in `make lint`: exits 1 on drift)
       .venv/bin/python deploy/sbom.py --write   (after changing the lock or dependencies)

The image runs `pip install -c deploy/constraints.txt .`, so what it installs is the
closure of pyproject's [project] dependencies (no extras of ours) with the versions of the
lock. The lock holds versions but not who requires whom, so the edges are read from the
installed metadata of the development virtualenv (deploy/local/venv installs it from the
same lock); a package whose installed version differs from the lock is an error, never a
silent guess. Markers are evaluated for the image (CPython 3.11 on Linux). No network, no
timestamp, a serial number derived from the content: the same lock gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "deploy/constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
SBOM = ROOT / "deploy/sbom.cdx.json"
# The image's interpreter (deploy/docker/Dockerfile: python:3.11-slim, linux).
IMAGE_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.14",  # the lock has no async-timeout: redis needs it below 3.11.3
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
}
# A fixed namespace so the serial number is a function of the content alone.
SERIAL_NAMESPACE = uuid.UUID("5f0c7c1e-3a1b-4f43-9f6e-0b1d2c3e4f50")


class SbomError(Exception):
    """The lock, the dependencies and the installed metadata disagree."""


def parse_lock(text: str) -> dict[str, str]:
    """`name==version` lines (comments and blanks skipped) by canonical name."""
    lock: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise SbomError(f"lock line {number}: expected name==version, got {raw!r}")
        lock[canonicalize_name(name.strip())] = version.strip()
    return lock


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    # Evaluated once per requested extra ("" for none), as pip does.
    return any(
        requirement.marker.evaluate({**IMAGE_MARKERS, "extra": extra}) for extra in ("", *extras)
    )


def _requirements(texts: Iterable[str]) -> list[Requirement]:
    return [req for req in map(Requirement, texts) if _applies(req, ())]


def direct(roots: Iterable[str]) -> set[str]:
    """The canonical names the project itself requires in the image."""
    return {canonicalize_name(req.name) for req in _requirements(roots)}


def closure(
    roots: Iterable[str],
    lock: Mapping[str, str],
    requires_of: Callable[[str], tuple[str, list[str]]],
) -> dict[str, set[str]]:
    """Every package the roots pull in, mapped to the packages it depends on.

    requires_of(name) gives a package's installed version and its Requires-Dist lines.
    """
    graph: dict[str, set[str]] = {}
    extras_of: dict[str, set[str]] = {}
    queue = [(canonicalize_name(r.name), set(r.extras)) for r in _requirements(roots)]
    while queue:
        name, extras = queue.pop()
        seen = extras_of.get(name)
        if seen is not None and extras <= seen:
            continue
        extras_of[name] = (seen or set()) | extras
        if name not in lock:
            raise SbomError(f"{name} is required but not pinned in {LOCK.name}")
        version, requires = requires_of(name)
        if version != lock[name]:
            raise SbomError(
                f"{name}: installed {version}, locked {lock[name]} (run deploy/local/venv)"
            )
        deps = graph.setdefault(name, set())
        for text in requires:
            req = Requirement(text)
            if _applies(req, extras_of[name]):
                dep = canonicalize_name(req.name)
                deps.add(dep)
                queue.append((dep, set(req.extras)))
    return graph


def purl(name: str, version: str) -> str:
    return f"pkg:pypi/{canonicalize_name(name)}@{version}"


def build_bom(
    project: tuple[str, str],
    roots: set[str],
    graph: Mapping[str, set[str]],
    lock: Mapping[str, str],
) -> dict[str, Any]:
    """The CycloneDX 1.5 document: the project, one library per package, the edges."""
    name, version = project
    root_ref = purl(name, version)
    components = [
        {
            "type": "library",
            "bom-ref": purl(dep, lock[dep]),
            "name": dep,
            "version": lock[dep],
            "purl": purl(dep, lock[dep]),
        }
        for dep in sorted(graph)
    ]
    dependencies = [{"ref": root_ref, "dependsOn": sorted(purl(d, lock[d]) for d in roots)}]
    dependencies += [
        {"ref": purl(dep, lock[dep]), "dependsOn": sorted(purl(d, lock[d]) for d in graph[dep])}
        for dep in sorted(graph)
    ]
    body: dict[str, Any] = {
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "deploy/sbom.py"}]},
            "component": {
                "type": "application",
                "bom-ref": root_ref,
                "name": name,
                "version": version,
                "purl": root_ref,
            },
        },
        "components": components,
        "dependencies": dependencies,
    }
    serial = uuid.uuid5(SERIAL_NAMESPACE, json.dumps(body, sort_keys=True))
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        **body,
    }


def render(bom: Mapping[str, Any]) -> str:
    return json.dumps(bom, indent=2) + "\n"


def _installed(name: str) -> tuple[str, list[str]]:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError as exc:
        raise SbomError(
            f"{name} is not installed in this environment (run deploy/local/venv)"
        ) from exc
    return dist.version, list(dist.requires or [])


def generate() -> str:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lock = parse_lock(LOCK.read_text())
    graph = closure(project["dependencies"], lock, _installed)
    roots = direct(project["dependencies"])
    return render(build_bom((project["name"], project["version"]), roots, graph, lock))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if the SBOM drifted")
    mode.add_argument("--write", action="store_true", help="rewrite deploy/sbom.cdx.json")
    args = parser.parse_args()
    try:
        text = generate()
    except SbomError as exc:
        print(f"sbom: {exc}", file=sys.stderr)
        return 1
    if args.write:
        SBOM.write_text(text)
        print(f"wrote {SBOM.relative_to(ROOT)}")
        return 0
    if not SBOM.exists() or SBOM.read_text() != text:
        print(
            f"{SBOM.relative_to(ROOT)} does not match the lock and pyproject's dependencies; "
            "run .venv/bin/python deploy/sbom.py --write",
            file=sys.stderr,
        )
        return 1
    print(f"{SBOM.relative_to(ROOT)} matches the lock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
