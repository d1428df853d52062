"""The worker process's probes (ota/health.py) on the real stack: ready once its
consumer polled and its sweeper swept, live while both keep beating, and a SIGTERM still
stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from workerkit import ROOT, env_for

from ops.demo_env import free_port
from workers.settings import WorkerSettings


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def test_a_running_worker_is_ready_and_live(wsettings: WorkerSettings) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("run_worker.py"))],
        cwd=ROOT,
        env={**os.environ, **env_for(wsettings), "OTA_WORKER_METRICS_PORT": str(port)},
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while (ready := _get(base + "/readyz"))[0] != 200:
            assert process.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, f"never ready; last {ready}"
            seen.update(ready[1].splitlines())
            time.sleep(0.1)
        group = wsettings.group_id
        checked = ["ok", "fresh: event-loop", f"fresh: kafka-poll {group}", "fresh: sweeper"]
        checked.append(f"fresh: group {group}")  # its consumer's membership (ota/health.py)
        assert ready[1].splitlines() == checked
        assert not [line for line in seen if line.startswith("stale")], seen
        assert _get(base + "/livez")[1].splitlines() == checked
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
