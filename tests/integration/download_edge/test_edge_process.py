"""`python -m download_edge` as a real process: several processes on one port, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ops.demo_env import free_port
from tests.waiting import wait_until

from .edge_support import Package, require_tool


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_processes_share_the_port_and_stop_on_sigterm(
    package: Package, token_for: Callable[..., str], tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env.update(
        OTA_EDGE_HOST="127.0.0.1",
        OTA_EDGE_PORT=str(port),
        OTA_EDGE_PROCESSES="2",
        OTA_EDGE_CACHE_DIR=str(tmp_path / "cache"),
        OTA_EDGE_EVENTS="false",
        OTA_EDGE_METRICS_PORT="0",
    )
    edge = subprocess.Popen([sys.executable, "-m", "download_edge"], env=env)
    try:
        wait_until(lambda: _answers(port), timeout_s=20)
        token = token_for(package.sha256)
        for start in range(0, 40_000, 1000):
            reply = subprocess.run(
                [
                    require_tool("curl"),
                    "-sSf",
                    "-r",
                    f"{start}-{start + 999}",
                    "-H",
                    f"Authorization: Bearer {token}",
                    f"http://127.0.0.1:{port}{package.path}",
                ],
                capture_output=True,
                check=True,
                timeout=30,
            ).stdout
            assert reply == package.data[start : start + 1000]
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(30) == 0
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait()
