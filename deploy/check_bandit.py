"""Run bandit over the shipped packages and hold every finding to deploy/bandit-reviewed.toml.

Usage: .venv/bin/python deploy/check_bandit.py   (in `make lint`)

A finding passes only when a reviewed entry matches it: the same bandit test id, a file
matching the entry's `path` (fnmatch) and a flagged source line matching its `line`
regex; each entry says why the finding is accepted. Exits 1 naming every finding no entry
matches, and every entry that matches nothing any more (the code was fixed or moved: the
exception goes too). Line numbers are never part of an entry, so edits elsewhere in a
file do not disturb the list.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REVIEWED = ROOT / "deploy/bandit-reviewed.toml"
BANDIT = ROOT / ".venv/bin/bandit"
PACKAGES = ("ota", "gateway", "scheduler", "workers", "download_edge", "devices", "ops")


@dataclass(frozen=True)
class Entry:
    test: str
    path: str
    line: re.Pattern[str]
    reason: str

    def matches(self, finding: Finding) -> bool:
        return (
            self.test == finding.test
            and fnmatch.fnmatch(finding.path, self.path)
            and self.line.search(finding.source) is not None
        )


@dataclass(frozen=True)
class Finding:
    test: str
    path: str
    line_number: int
    source: str  # the flagged line, stripped
    text: str
    severity: str

    def describe(self) -> str:
        return f"{self.path}:{self.line_number}: {self.test} ({self.severity}) {self.text}\n    {self.source}"


def load_entries(path: Path = REVIEWED) -> list[Entry]:
    table = tomllib.loads(path.read_text())
    entries = []
    for n, raw in enumerate(table.get("accepted", []), 1):
        missing = {"test", "path", "line", "reason"} - set(raw)
        if missing or not str(raw.get("reason", "")).strip():
            raise SystemExit(f"{path}: entry {n} needs test, path, line and a reason")
        entries.append(Entry(raw["test"], raw["path"], re.compile(raw["line"]), raw["reason"]))
    return entries


def findings(report: dict[str, Any]) -> list[Finding]:
    found = []
    for result in report.get("results", []):
        path = Path(result["filename"])
        lines = (ROOT / path).read_text().splitlines()
        number = int(result["line_number"])
        found.append(
            Finding(
                result["test_id"],
                path.as_posix(),
                number,
                lines[number - 1].strip() if 0 < number <= len(lines) else "",
                result["issue_text"],
                result["issue_severity"],
            )
        )
    return found


def judge(found: list[Finding], entries: list[Entry]) -> list[str]:
    """The problems: findings no entry accepts, entries accepting nothing."""
    problems = [
        f"not reviewed: {f.describe()}" for f in found if not any(e.matches(f) for e in entries)
    ]
    for entry in entries:
        if not any(entry.matches(f) for f in found):
            problems.append(
                f"stale entry in {REVIEWED.name}: {entry.test} {entry.path} "
                f"/{entry.line.pattern}/ matches no finding: remove it"
            )
    return problems


def main() -> int:
    run = subprocess.run(
        [str(BANDIT), "-q", "-f", "json", "-r", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode not in (0, 1) or not run.stdout.strip():
        print(f"bandit failed (exit {run.returncode}):\n{run.stderr}", file=sys.stderr)
        return 2
    report = json.loads(run.stdout)
    if report.get("errors"):
        print(f"bandit could not scan: {report['errors']}", file=sys.stderr)
        return 2
    found = findings(report)
    problems = judge(found, load_entries())
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"bandit: {len(problems)} problem(s); fix the code, or add an entry with its "
            f"reason to {REVIEWED.relative_to(ROOT)}",
            file=sys.stderr,
        )
        return 1
    print(f"bandit: {len(found)} findings, each accepted with its reason in {REVIEWED.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
