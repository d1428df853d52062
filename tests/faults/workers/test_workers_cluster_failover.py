"""Redis Cluster masters replaced by their replicas while a worker process drives jobs:
handed over in sync (CLUSTER FAILOVER), or killed with -9 and the replica promoted. The
jobs finish with each transition and each command exactly once (distinct ids).

A handover costs the worker nothing (the client follows MOVED). A killed master breaks
the worker's connections: the process stops with the error, as on a standalone Redis, and
is started again here as its supervisor would; the new owner resumes from Redis's offsets.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from workerkit import (
    TARGET,
    Inbox,
    Reader,
    make_settings,
    make_topics,
    reached,
    spawn_worker,
    transitions,
)

from ota.records import CommandRecord, DownloadPhase
from tests.redis_cluster_kit import running_cluster
from workers.settings import WorkerSettings

DEVICES = 12  # over 4 partitions, so on every master
EXPECTED = [
    ("QUEUED", "QUERYING_VERSION"),
    ("QUERYING_VERSION", "COMMAND_SENT"),
    ("COMMAND_SENT", "DOWNLOADING"),
    ("DOWNLOADING", "DOWNLOADED"),
    ("DOWNLOADED", "UPDATING"),
    ("UPDATING", "SUCCEEDED"),
]


class Supervised:
    """One worker process, started again whenever it exited (what Kubernetes does)."""

    def __init__(self, settings: WorkerSettings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.process = spawn_worker(settings, log=log)
        self.restarts = 0

    def ensure(self) -> None:
        if self.process.poll() is not None:
            self.process = spawn_worker(self.settings, log=self.log)
            self.restarts += 1

    def why(self) -> str:
        """The end of what the worker processes logged (warnings and errors)."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def distinct(records: list[Any]) -> int:
    return len({r.id for r in records})


@pytest.mark.parametrize("how", ["handover", "kill"])
def test_jobs_finish_exactly_once_when_every_master_is_replaced(
    how: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    with running_cluster(tmp_path, replicas=True) as cluster:
        settings = make_settings(kafka_bootstrap, cluster.url, make_topics(topic_factory, 4))
        inbox = Inbox(settings)
        events = Reader(kafka_bootstrap, settings.common.topics.job_events)
        commands = Reader(kafka_bootstrap, settings.common.topics.commands)
        worker = Supervised(settings, tmp_path / "worker.log")
        devices = [f"dev-{uuid.uuid4().hex[:10]}" for _ in range(DEVICES)]
        try:
            for d in devices:
                inbox.online(d)
                inbox.start(d, "task-failover")
            commands.wait(lambda rs: distinct(rs) >= DEVICES)
            for d in devices:
                inbox.version(d, "1.0")
            commands.wait(lambda rs: distinct(rs) >= 2 * DEVICES)
            for master in range(cluster.masters):
                if how == "handover":
                    cluster.failover(master)
                else:
                    cluster.kill_master(master)
            for d in devices:
                inbox.download(d, DownloadPhase.STARTED)
                inbox.download(d, DownloadPhase.FINISHED)
                inbox.progress(d, 0, 60, "1.0")
                inbox.progress(d, 0, 100, TARGET)

            def finished(records: list[Any]) -> bool:
                worker.ensure()
                return all(reached(records, d, "SUCCEEDED") for d in devices)

            got = events.wait(finished, timeout_s=120)
            sent = commands.drain()
        finally:
            worker.stop()
            inbox.close()
            events.close()
            commands.close()
    if how == "handover":
        assert worker.restarts == 0, worker.why()
    by_id = {r.id: (r.device_id, r.event_type) for r in sent if isinstance(r, CommandRecord)}
    for d in devices:
        assert [(f, t) for _, f, t in transitions(got, d)] == EXPECTED
        kinds = sorted(kind for device, kind in by_id.values() if device == d)
        assert kinds == ["firmware_upgrade", "version_query"]
