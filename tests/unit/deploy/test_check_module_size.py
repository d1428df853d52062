"""deploy/check_module_size.py: a module over the limit fails lint; hidden and build
directories are not the project's source."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import deploy_kit

check = deploy_kit.load("check_module_size")


def _write(path: Path, lines: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x = 1\n" * lines)


def test_a_module_over_the_limit_is_named_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "pkg" / "small.py", 10)
    _write(tmp_path / "pkg" / "exact.py", 10)
    _write(tmp_path / "pkg" / "big.py", 11)
    assert check.main(["--max-lines", "10", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "pkg/big.py: 11 lines (at most 10)" in out
    assert "small.py" not in out
    assert "exact.py" not in out


def test_hidden_build_and_artefact_directories_are_skipped(tmp_path: Path) -> None:
    for skipped in (".venv/lib", ".tools/x", "build", "pkg/__pycache__", "x.egg-info"):
        _write(tmp_path / skipped / "huge.py", 50)
    _write(tmp_path / "pkg" / "ok.py", 5)
    _write(tmp_path / "pkg" / "notes.txt", 50)
    assert check.too_long(tmp_path, 10) == []
    assert check.main(["--max-lines", "10", str(tmp_path)]) == 0


def test_a_bad_limit_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        check.main(["--max-lines", "0", str(tmp_path)])
    assert exited.value.code == 2
