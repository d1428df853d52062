"""A tiny service on the shared runtime, for tests/unit/ota/test_runtime.py to run as a real
process: `python tests/unit/ota/runtime_app.py <mode>` (the repository on PYTHONPATH).

Modes: `bad-settings` (the settings reader raises), `graceful` (waits for stop, then logs
`drained`), `slow-drain` (logs `draining` and never finishes), `task-crash` (a
background task raises), `thread-crash` (a background thread raises), `task-ends` (a
background task returns by itself), `hang-after-crash` (a task raises and main ignores
the stop), `stuck-thread` (a task raises while a thread never returns), `hang-loop`
(serves metrics on APP_METRICS_PORT and blocks its event loop once a line arrives on
stdin), `never-started` (serves metrics, never calls `started`, logs `not started`).
Every other mode logs `ready` once running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from dataclasses import dataclass

from ota.runtime import Runtime, Service, run
from ota.settings import CommonSettings, SettingsError

log = logging.getLogger("runtime_app")


@dataclass(frozen=True)
class AppSettings:
    common: CommonSettings
    mode: str
    password: str = "not-for-logs"
    metrics_port: int = 0


def load() -> AppSettings:
    mode = sys.argv[1]
    if mode == "bad-settings":
        raise SettingsError("OTA_APP_WIDGETS='many' is not an integer")
    return AppSettings(
        CommonSettings.from_env(
            {"OTA_LIVENESS_LIMIT_S": os.environ.get("OTA_LIVENESS_LIMIT_S", "30")}
        ),
        mode,
        metrics_port=int(os.environ.get("APP_METRICS_PORT", "0")),
    )


async def boom() -> None:
    await asyncio.sleep(0.05)
    raise RuntimeError("boom in a background task")


def thread_boom() -> None:
    raise RuntimeError("boom in a background thread")


async def main(settings: AppSettings, rt: Runtime) -> None:
    mode = settings.mode
    if mode in ("task-crash", "hang-after-crash"):
        rt.spawn(boom(), "boom")
    elif mode == "thread-crash":
        rt.spawn_thread(thread_boom, "thread-boom")
    elif mode == "stuck-thread":
        rt.spawn(boom(), "boom")
        rt.spawn_thread(threading.Event().wait, "stuck")  # ignores stop for ever
    elif mode == "task-ends":
        rt.spawn(asyncio.sleep(0.05), "short")
    if mode == "never-started":
        log.info("not started")
        await rt.stop.wait()
        return
    rt.started()
    log.info("ready")
    if mode == "hang-loop":
        await asyncio.to_thread(sys.stdin.readline)
        log.info("blocking the loop")
        threading.Event().wait()  # on the loop itself: nothing else on it runs again
    if mode == "hang-after-crash":
        await asyncio.Event().wait()  # ignores stop: the runtime must end the process
    await rt.stop.wait()
    if mode == "slow-drain":
        log.info("draining")
        await asyncio.Event().wait()
    if mode == "graceful":
        # a thread that stops on request, like the worker's consumer loop
        stopped = threading.Event()
        rt.on_stop(stopped.set)
        await asyncio.to_thread(stopped.wait, 5)
        log.info("drained", extra={"thread_stopped": stopped.is_set()})


SERVICE = Service(
    prog="runtime_app",
    name="runtime-app",
    load=load,
    common=lambda s: s.common,
    metrics_port=lambda s: s.metrics_port,
    stop_timeout_s=lambda s: 0.5,
    main=main,
)

if __name__ == "__main__":
    sys.exit(run(SERVICE))
