"""`ota up` restarts crashed services, gives up on crash loops and stops cleanly."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from ops import supervisor
from ops.supervisor import Service, Supervisor
from ota.backoff import Backoff


def python_service(name: str, code: str, tmp_path: Path) -> Service:
    return Service(name, (sys.executable, "-c", code), tmp_path / f"{name}.log")


def test_a_crashed_service_is_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF", Backoff(0.5, 10.0, rand=lambda: 0.0))
    marker = tmp_path / "runs"
    code = f"open({str(marker)!r}, 'a').write('x'); import sys; sys.exit(3)"
    service = python_service("flaky", code, tmp_path)
    result = Supervisor([service], {}).run(until=time.monotonic() + 3)
    runs = len(marker.read_text())
    assert runs == supervisor.MAX_QUICK_CRASHES
    assert result == 1  # it crashed every time within seconds, so the supervisor gave up


def test_restart_delays_grow_with_quick_crashes_and_reset_after_a_stable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF", Backoff(0.5, 10.0, rand=lambda: 1.0))
    service = python_service("flaky", "", tmp_path)
    delays = []
    for ran_for in (60.0, 1.0, 1.0, 1.0, 60.0):
        service.started_at = time.monotonic() - ran_for
        assert service.schedule_restart(1)
        assert service.restart_at is not None
        delays.append(round(service.restart_at - time.monotonic(), 1))
    assert delays == [0.5, 1.0, 2.0, 4.0, 0.5]


def test_stop_terminates_long_running_services(tmp_path: Path) -> None:
    service = python_service(
        "sleeper", "import time; print('up', flush=True); time.sleep(60)", tmp_path
    )
    sup = Supervisor([service], {})
    assert sup.run(until=time.monotonic() + 0.5) == 0
    assert service.process is not None
    assert service.process.returncode == -signal.SIGTERM  # asked to stop, not killed
    assert b"up" in service.log_path.read_bytes()


def test_unknown_services_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        supervisor.parse_args(["gateway", "mailer"])
    assert "unknown service mailer" in capsys.readouterr().err


def test_replicas_get_their_own_logs(tmp_path: Path) -> None:
    services = supervisor.build_services(["workers"], tmp_path, replicas=2)
    assert [s.name for s in services] == ["workers-0", "workers-1"]
    assert {s.log_path.name for s in services} == {"workers-0.log", "workers-1.log"}


def test_workers_get_static_member_ids_stable_per_supervisor(tmp_path: Path) -> None:
    services = supervisor.build_services(["workers", "gateway"], tmp_path, {"workers": 2})
    ids = [s.env.get("OTA_WORKER_INSTANCE_ID") for s in services]
    assert ids[2] is None  # the gateway has no such setting
    assert ids[0] != ids[1]
    assert str(os.getpid()) in str(ids[0])
    again = supervisor.build_services(["workers"], tmp_path, {"workers": 2})
    assert [s.env["OTA_WORKER_INSTANCE_ID"] for s in again] == ids[:2]


def test_a_configured_worker_instance_id_is_kept_per_replica(tmp_path: Path) -> None:
    env = {"OTA_WORKER_INSTANCE_ID": "pod-7"}
    single = supervisor.build_services(["workers"], tmp_path, 1, env)
    assert single[0].env["OTA_WORKER_INSTANCE_ID"] == "pod-7"
    pair = supervisor.build_services(["workers"], tmp_path, 2, env)
    assert [s.env["OTA_WORKER_INSTANCE_ID"] for s in pair] == ["pod-7-0", "pod-7-1"]
