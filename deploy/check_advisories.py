"""Check the pinned dependencies against a vendored snapshot of the PyPA advisory database.

Usage: .venv/bin/python deploy/check_advisories.py            (in `make lint`; no network)
       .venv/bin/python deploy/check_advisories.py refresh SOURCE [--source-name NAME]

The check reads the pins of deploy/constraints.txt (the image's and the .venv's lock) and
deploy/tools/requirements.txt (the lint tools' top-level pins), and the advisories of
deploy/advisories/subset.json, and prints one line per pinned version an advisory affects
(deploy/osv.py decides). The first line names the snapshot and its date: a stale snapshot
knows nothing of later advisories. Exits 1 on a finding no entry of
deploy/advisories-reviewed.toml accepts (package, pinned version, advisory id and a
reason), on an entry that matches nothing any more, and on a pinned package the subset was
not refreshed for.

`refresh` rewrites the subset and deploy/advisories/snapshot.json from SOURCE: a checkout
or mirror of github.com/pypa/advisory-database (its HEAD: vulns/**.yaml, the commit and
its date are recorded) or a directory of OSV files (.json, .yaml; the newest `modified`
stands for the date). Only the advisories of pinned packages are kept, trimmed.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]

# osv.py (the decisions) and sbom.py (the lock's parser) are siblings; this runs as a file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import osv
from sbom import SbomError, parse_lock

ROOT = Path(__file__).resolve().parent.parent
PINNED = (ROOT / "deploy/constraints.txt", ROOT / "deploy/tools/requirements.txt")
SUBSET = ROOT / "deploy/advisories/subset.json"
SNAPSHOT = ROOT / "deploy/advisories/snapshot.json"
REVIEWED = ROOT / "deploy/advisories-reviewed.toml"
OSV_SUFFIXES = (".json", ".yaml", ".yml")


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def read_pins() -> list[osv.Pin]:
    pins = []
    for path in PINNED:
        try:
            lock = parse_lock(path.read_text())
        except SbomError as exc:
            raise osv.AdvisoryError(f"{_relative(path)}: {exc}") from None
        pins += [osv.Pin(_relative(path), name, version) for name, version in lock.items()]
    return pins


def load_subset() -> tuple[dict[str, Any], list[osv.Advisory]]:
    """The snapshot's metadata and its advisories, as refresh wrote them."""
    subset, snapshot = SUBSET, SNAPSHOT
    try:
        meta, records = json.loads(snapshot.read_text()), json.loads(subset.read_text())
    except (OSError, ValueError) as exc:
        raise osv.AdvisoryError(f"the vendored snapshot cannot be read: {exc}") from None
    if not isinstance(meta, dict) or not {"source", "date", "packages"} <= set(meta):
        raise osv.AdvisoryError(f"{_relative(snapshot)}: needs source, date and packages")
    if not isinstance(records, list):
        raise osv.AdvisoryError(f"{_relative(subset)}: not a list of advisories")
    return meta, [osv.parse(record) for record in records]


def check(today: datetime) -> int:
    meta, advisories = load_subset()
    print(osv.headline(meta, advisories, today.date()))
    pins = read_pins()
    problems = [
        f"no advisories were taken for {name}: refresh the subset (deploy/check_advisories.py refresh)"
        for name in osv.uncovered((p.package for p in pins), set(meta["packages"]))
    ]
    found = osv.find(pins, advisories)
    accepted = osv.load_reviewed(REVIEWED.read_text(), REVIEWED.name)
    for finding in found:
        reasons = [a.reason for a in accepted if a.matches(finding)]
        verdict = f"accepted: {reasons[0].strip().splitlines()[0]}" if reasons else "NOT REVIEWED"
        print(f"  {finding.describe()} [{verdict}]")
    problems += osv.judge(found, accepted, REVIEWED.name)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"advisories: {len(problems)} problem(s); upgrade the pin, or add an entry with its "
            f"reason to {_relative(REVIEWED)}",
            file=sys.stderr,
        )
        return 1
    accepted_note = f", each accepted with its reason in {REVIEWED.name}" if found else ""
    print(f"advisories: {len(found)} finding(s) in {len(pins)} pins{accepted_note}")
    return 0


def _git(source: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(source), *args], capture_output=True, check=False)


def _is_git_root(source: Path) -> bool:
    """A checkout's top or a bare mirror; not a plain directory that lies inside some repo."""
    run = _git(source, "rev-parse", "--absolute-git-dir")
    if run.returncode != 0:
        return False
    git_dir = Path(run.stdout.decode().strip()).resolve()
    return git_dir in (source.resolve(), (source / ".git").resolve())


def _decode(name: str, data: bytes) -> dict[str, Any]:
    try:
        record = (
            json.loads(data) if name.endswith(".json") else yaml.load(data, Loader=yaml.CSafeLoader)
        )
    except (ValueError, yaml.YAMLError) as exc:
        raise osv.AdvisoryError(f"{name}: not an OSV record: {exc}") from None
    if not isinstance(record, dict):
        raise osv.AdvisoryError(f"{name}: not an OSV record (a {type(record).__name__})")
    return record


def _git_records(source: Path) -> Iterator[dict[str, Any]]:
    archive = _git(source, "archive", "--format=tar", "HEAD", "vulns")
    if archive.returncode != 0:
        raise osv.AdvisoryError(
            f"{source}: git archive HEAD vulns failed: {archive.stderr.decode()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None and member.name.endswith(OSV_SUFFIXES):
                yield _decode(member.name, extracted.read())


def _directory_records(source: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix in OSV_SUFFIXES:
            yield _decode(str(path), path.read_bytes())


def refresh(source: Path, source_name: str | None) -> int:
    names = {pin.package for pin in read_pins()}
    if _is_git_root(source):
        head = _git(source, "log", "-1", "--format=%H %cI", "HEAD").stdout.decode().split()
        if len(head) != 2:
            raise osv.AdvisoryError(f"{source}: no HEAD commit")
        commit, taken = head
        url = _git(source, "config", "--get", "remote.origin.url").stdout.decode().strip()
        records = list(_git_records(source))
    elif source.is_dir():
        commit, url = "", ""
        records = list(_directory_records(source))
        taken = max((str(r.get("modified", "")) for r in records), default="")
    else:
        raise osv.AdvisoryError(f"{source}: neither a git checkout or mirror nor a directory")
    if not records or not taken:
        raise osv.AdvisoryError(f"{source}: no OSV records found (a git source needs vulns/)")
    kept = sorted(
        (t for r in records if (t := osv.trim(r, names)) is not None), key=lambda t: t["id"]
    )
    for trimmed in kept:
        osv.parse(trimmed)  # refuse now what the check could not read later
    meta = {
        "source": source_name or url or str(source),
        "commit": commit,
        "date": taken,
        "records_scanned": len(records),
        "advisories_kept": len(kept),
        "packages": sorted(names),
    }
    SUBSET.parent.mkdir(parents=True, exist_ok=True)
    # One advisory a line: diffs of a refresh show which advisories came and went.
    lines = ",\n".join(json.dumps(t, sort_keys=True, separators=(",", ":")) for t in kept)
    SUBSET.write_text(f"[\n{lines}\n]\n" if kept else "[]\n")
    SNAPSHOT.write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"advisories: {len(kept)} of {len(records)} records kept for {len(names)} pinned "
        f"packages, from {meta['source']} at {commit[:12] or 'no commit'} dated {taken}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    refreshing = commands.add_parser("refresh", help="rewrite the subset from an advisory database")
    refreshing.add_argument(
        "source", type=Path, help="checkout/mirror, or a directory of OSV files"
    )
    refreshing.add_argument(
        "--source-name", help="recorded as the source (default: its remote URL)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "refresh":
            return refresh(args.source, args.source_name)
        return check(datetime.now(UTC))
    except osv.AdvisoryError as exc:
        print(f"advisories: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
