"""Fixtures of the security tests: certificates from deploy/local/make_certs.py's CA.

| fixture    | what                                                                        |
|------------|-----------------------------------------------------------------------------|
| `tls_dir`  | a CA (`ca.pem`) and the servers' certificate (`server.p12`, its password),  |
|            | one for the session: the private Kafka and Redis both present it            |
| `other_ca` | another CA's folder, which signed no server here                            |
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _make_certs(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "deploy/local/make_certs.py"), "--dir", str(folder)],
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    return _make_certs(tmp_path / "other-ca")
