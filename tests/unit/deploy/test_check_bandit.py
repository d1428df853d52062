"""deploy/check_bandit.py: a finding passes only with a reviewed entry, and an entry
matching nothing fails too; the reviewed list itself loads, every entry with a reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import deploy_kit

check = deploy_kit.load("check_bandit")


def finding(test: str, path: str, source: str) -> object:
    return check.Finding(test, path, 7, source, "text", "LOW")


def test_the_reviewed_list_loads_and_narrows_asserts_to_none_checks() -> None:
    entries = check.load_entries()
    assert all(e.reason.strip() for e in entries)
    narrowing = finding("B101", "download_edge/server.py", "assert self._server is not None")
    validating = finding("B101", "download_edge/server.py", "assert size > 0")
    assert check.judge([narrowing], [e for e in entries if e.test == "B101"]) == []
    problems = check.judge([validating], [e for e in entries if e.test == "B101"])
    assert any(p.startswith("not reviewed: download_edge/server.py:7: B101") for p in problems)


def test_unreviewed_findings_and_stale_entries_are_problems() -> None:
    entry = check.Entry("B105", "ota/*.py", re.compile(r'^X = "x"$'), "a name")
    accepted = finding("B105", "ota/names.py", 'X = "x"')
    other_file = finding("B105", "scheduler/names.py", 'X = "x"')
    assert check.judge([accepted], [entry]) == []
    problems = check.judge([other_file], [entry])
    assert len(problems) == 2
    assert problems[0].startswith("not reviewed: scheduler/names.py:7")
    assert problems[1].startswith("stale entry")


def test_an_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "reviewed.toml"
    listed.write_text('[[accepted]]\ntest = "B101"\npath = "*"\nline = "x"\nreason = " "\n')
    with pytest.raises(SystemExit, match="needs test, path, line and a reason"):
        check.load_entries(listed)
