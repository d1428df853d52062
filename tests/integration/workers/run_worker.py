"""The worker service on test topics, in its own process (kill -9 tests).

Topics come from OTA_TEST_TOPICS (inbox,commands,job-events,dead-letters) because the test
topics do not share a prefix. `--crash-after-write N` kills the process with SIGKILL right
after its Nth partition batch reached Redis, before anything is produced or committed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import replace
from typing import Any

from ota import logs, runtime
from workers import service
from workers.settings import WorkerSettings
from workers.store import Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crash-after-write", type=int, default=0)
    args = parser.parse_args()
    inbox, commands, job_events, dead_letters = os.environ["OTA_TEST_TOPICS"].split(",")
    settings = WorkerSettings.from_env()
    topics = replace(
        settings.common.topics,
        inbox=inbox,
        commands=commands,
        job_events=job_events,
        dead_letters=dead_letters,
    )
    settings = replace(settings, common=replace(settings.common, topics=topics))
    logs.setup("worker", "WARNING")
    if args.crash_after_write:
        _crash_after(args.crash_after_write)
    sys.exit(
        runtime.serve(
            lambda rt: service.main(settings, rt),
            metrics_port=settings.metrics_port,  # 0 (none) unless OTA_WORKER_METRICS_PORT
            metrics_host=settings.common.metrics_host,
            stop_timeout_s=service.SERVICE.stop_timeout_s(settings),
        )
    )


def _crash_after(writes: int) -> None:
    original = Store.apply_many
    count = 0

    def apply_many(self: Store, *a: Any, **kw: Any) -> list[int | None]:
        nonlocal count
        found = original(self, *a, **kw)
        count += sum(f is None for f in found)
        if count >= writes:
            os.kill(os.getpid(), signal.SIGKILL)
        return found

    Store.apply_many = apply_many  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
