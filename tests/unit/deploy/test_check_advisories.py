"""deploy/check_advisories.py: the committed advisory subset was refreshed for the pins as
they are, and refresh reads a directory of OSV files or a git repository's HEAD. No test
needs the advisory database itself: the git source is a small repository made here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import deploy_kit

check = deploy_kit.load("check_advisories")

AFFECTING_DEMO = """id: PYSEC-2099-1
aliases: [CVE-2099-1]
details: not kept
modified: "2099-01-02T00:00:00Z"
affected:
- package: {name: Demo_Pkg, ecosystem: PyPI}
  ranges:
  - type: ECOSYSTEM
    events: [{introduced: "0"}, {fixed: "1.5"}]
"""
OTHER = {
    "id": "PYSEC-2099-2",
    "modified": "2099-03-04T00:00:00Z",
    "affected": [{"package": {"name": "unpinned", "ecosystem": "PyPI"}, "versions": ["1"]}],
}


def test_the_committed_subset_was_refreshed_for_every_pinned_package() -> None:
    meta, advisories = check.load_subset()
    pinned = {pin.package for pin in check.read_pins()}
    assert check.osv.uncovered(pinned, set(meta["packages"])) == []
    assert meta["advisories_kept"] == len(advisories)
    assert {entry.package for a in advisories for entry in a.affected} <= set(meta["packages"])
    check.osv.load_reviewed(check.REVIEWED.read_text(), check.REVIEWED.name)


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Refresh writes into tmp_path, for the pins of one small lock."""
    lock = tmp_path / "lock.txt"
    lock.write_text("# pins\ndemo-pkg==1.2\n")
    monkeypatch.setattr(check, "PINNED", (lock,))
    monkeypatch.setattr(check, "SUBSET", tmp_path / "out/subset.json")
    monkeypatch.setattr(check, "SNAPSHOT", tmp_path / "out/snapshot.json")
    return tmp_path / "out"


def _found_by_the_refreshed_subset() -> list[str]:
    _, advisories = check.load_subset()
    return [f.describe() for f in check.osv.find(check.read_pins(), advisories)]


def test_refresh_from_a_directory_keeps_the_pinned_packages_advisories(
    outputs: Path, tmp_path: Path
) -> None:
    source = tmp_path / "osv"
    (source / "nested").mkdir(parents=True)
    (source / "nested/PYSEC-2099-1.yaml").write_text(AFFECTING_DEMO)
    (source / "PYSEC-2099-2.json").write_text(json.dumps(OTHER))
    assert check.main(["refresh", str(source), "--source-name", "test-db"]) == 0
    meta = json.loads((outputs / "snapshot.json").read_text())
    assert meta["source"] == "test-db"
    assert meta["commit"] == ""
    assert meta["date"] == "2099-03-04T00:00:00Z"  # the newest `modified` read
    assert (meta["records_scanned"], meta["advisories_kept"]) == (2, 1)
    assert _found_by_the_refreshed_subset() == [
        f"demo-pkg==1.2 ({tmp_path / 'lock.txt'}): PYSEC-2099-1 (CVE-2099-1); fixed in: 1.5"
    ]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_refresh_from_a_git_repository_records_its_head(outputs: Path, tmp_path: Path) -> None:
    repo = tmp_path / "db"
    (repo / "vulns/demo-pkg").mkdir(parents=True)
    (repo / "vulns/demo-pkg/PYSEC-2099-1.yaml").write_text(AFFECTING_DEMO)
    (repo / "README.yaml").write_text("not: an advisory\n")  # outside vulns/: not read
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "db")
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert check.main(["refresh", str(repo)]) == 0
    meta = json.loads((outputs / "snapshot.json").read_text())
    assert (meta["commit"], meta["records_scanned"]) == (head, 1)
    assert meta["source"] == str(repo)  # no remote to name it
    assert len(_found_by_the_refreshed_subset()) == 1
    # A plain directory inside a repository is read as a directory, not as that repository.
    assert check.main(["refresh", str(repo / "vulns")]) == 0
    assert json.loads((outputs / "snapshot.json").read_text())["commit"] == ""


def test_a_source_with_a_bad_record_is_refused_and_nothing_is_written(
    outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "osv"
    source.mkdir()
    (source / "PYSEC-2099-1.yaml").write_text(AFFECTING_DEMO.replace('"1.5"', '"1.5 final"'))
    assert check.main(["refresh", str(source)]) == 2
    assert "PYSEC-2099-1: '1.5 final' is not a PEP 440 version" in capsys.readouterr().err
    assert not outputs.exists()
    assert check.main(["refresh", str(tmp_path / "missing")]) == 2
