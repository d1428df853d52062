"""A private S3-compatible server for tests: moto's server mode (the test extra's
`moto[server]`), on a free loopback port, ended by its own process id.

`running_s3()` yields an `ObjectStoreSettings` for a fresh bucket (created through the
project's own client, so bucket creation is signed like every other request). moto
accepts any credentials and does not check SigV4 signatures or the signed payload hash;
the signature itself is checked against AWS's published example in
tests/unit/ota/test_sigv4.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ops.demo_env import free_port
from ota.object_store import ObjectStore, ObjectStoreSettings
from ota.sigv4 import Credentials
from tests.conftest import missing

START_TIMEOUT_S = 30.0


def _moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        missing("moto_server is not installed (the test extra's moto[server]; run make venv)")
    return found


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the port accepts a connection: the server's own signal that it is up."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not listen on {port} within {START_TIMEOUT_S} s")


@contextmanager
def running_s3(log_dir: Path) -> Iterator[ObjectStoreSettings]:
    port = free_port()
    with (log_dir / "moto_server.log").open("wb") as log:
        process = subprocess.Popen(
            [_moto_server(), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    try:
        _wait_listening(port, process)
        settings = ObjectStoreSettings(
            endpoint=f"http://127.0.0.1:{port}",
            bucket=f"ota-{uuid.uuid4().hex[:12]}",
            region="us-east-1",
            credentials=Credentials("test-access-key", "test-secret-key"),
        )
        store = ObjectStore(settings)
        try:
            store.create_bucket()
        finally:
            store.close()
        yield settings
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def env_of(settings: ObjectStoreSettings) -> dict[str, str]:
    """The OTA_ variables that select this bucket."""
    return {
        "OTA_PACKAGE_STORE": "s3",
        "OTA_S3_ENDPOINT": settings.endpoint,
        "OTA_S3_BUCKET": settings.bucket,
        "OTA_S3_REGION": settings.region,
        "OTA_S3_ACCESS_KEY_ID": settings.credentials.access_key,
        "OTA_S3_SECRET_ACCESS_KEY": settings.credentials.secret_key,
    }
