"""Fixtures of ota's unit tests: `ca_file`, a file standing for a CA certificate (settings
check that it is readable; nothing here parses it)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here")
    return ca
