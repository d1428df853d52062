"""deploy/local/create_topics.py: a replication setting it cannot honour is refused with
its reason before any broker is contacted (the bootstrap below answers nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "deploy/local/create_topics.py"
NOWHERE = "127.0.0.1:1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replication-factor", "0"], "--replication-factor must be at least 1"),
        (
            ["--replication-factor", "3", "--min-insync-replicas", "4"],
            "--min-insync-replicas must be between 1 and --replication-factor",
        ),
        (["--min-insync-replicas", "0"], "--min-insync-replicas must be between 1"),
        (["--min-insync-replicas", "2"], "--min-insync-replicas must be between 1"),
    ],
)
def test_an_impossible_replication_setting_is_refused(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--bootstrap", NOWHERE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done
    assert message in done.stderr
