"""One runtime for every service process: settings, logs, metrics, signals, supervision.

A service declares itself as a `Service` (its name, how to read its settings, its metrics
port, its bound on stopping and its `main(settings, runtime)` coroutine) and its
`__main__` calls `run(service)`. The runtime then, in this order:

1. reads the settings; a `SettingsError` prints `<prog>: <the bad variable and why>` to
   stderr and exits 2, before anything starts;
2. sets up JSON logs and logs the settings (secrets left out);
3. starts the Prometheus server (port 0: none), which also answers /livez and /readyz
   from the process's heartbeats (ota/health.py); the event loop beats on its own, and
   /readyz answers `starting: main` until main calls `runtime.started()` once its parts
   exist (their beats and holds registered): a probe must not find a process ready
   before it has said what ready means for it;
4. runs `main` on uvloop with SIGTERM/SIGINT handled: the first signal sets
   `runtime.stop` and main drains (stop intake, finish what is in flight, commit,
   close); a signal while stopping exits at once with 130;
5. supervises the background tasks main starts with `runtime.spawn` (coroutines) or
   `runtime.spawn_thread` (blocking loops), or hands over with `runtime.watch`: a task
   that raises is logged with its traceback and stops the service (exit 1), and so does
   one that ends while the service is not stopping. If the service then does not stop
   within twice its bound (main's drain, then the tasks'), the process exits 1 anyway:
   a broken service never stays up half alive.

Exit codes, the same for every service: 0 stopped on request, 1 failed (main or a
background task raised, logged with the traceback), 2 bad settings, 130 forced by a
second signal. Tests build a `Runtime(stop)` in their own event loop and pass it to a
service's main; the signal handling and exit codes are only `run`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import uvloop

from ota import logs
from ota.health import (
    DEFAULT_GROUP_LIMIT_S,
    DEFAULT_LIMIT_S,
    HEALTH,
    LOOP_BEAT_INTERVAL_S,
    Health,
)
from ota.metrics import serve_metrics
from ota.settings import CommonSettings, SettingsError

log = logging.getLogger("ota.runtime")

S = TypeVar("S")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETTINGS = 2
EXIT_FORCED = 130

# Field names whose values never reach the settings report, even if a dataclass forgot
# `field(repr=False)` (a key file's path is left out too: better one field too few).
_SECRET_WORDS = ("password", "secret", "token", "key", "credential")
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


class Runtime:
    """The stop event and the supervised background tasks of one service."""

    def __init__(self, stop: asyncio.Event | None = None, health: Health = HEALTH) -> None:
        self.stop = stop if stop is not None else asyncio.Event()
        self.health = health  # main's `hold`s and beats; the process's one by default
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()  # set with the first failure
        self._tasks: set[asyncio.Task[Any]] = set()
        self._release_start: Callable[[], None] = lambda: None

    def hold_until_started(self, release: Callable[[], None]) -> None:
        """`release` (a readiness hold) is called by `started`."""
        self._release_start = release

    def started(self) -> None:
        """main has built its parts (their beats and holds registered): readiness now
        follows them."""
        self._release_start()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a supervised task: it should return once `stop` is set."""
        return self.watch(asyncio.get_running_loop().create_task(coro, name=name))

    def watch(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Supervise a task started elsewhere (a component that owns and cancels its own
        loop): failing, or ending before stop, stops the service like a spawned task."""
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def spawn_thread(self, fn: Callable[[], object], name: str) -> asyncio.Task[Any]:
        """Run the blocking `fn` on a daemon thread of its own, supervised like `spawn`;
        make it return on stop with `on_stop` (a thread cannot be cancelled; one stuck
        past the bound does not keep the process from exiting)."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[object] = loop.create_future()

        def settle(result: object, error: BaseException | None) -> None:
            if outcome.done():  # the waiting task was cancelled
                return
            if error is None:
                outcome.set_result(result)
            else:
                outcome.set_exception(error)

        def target() -> None:
            result: object = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the loop, which decides
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=target, name=name, daemon=True).start()

        async def wait() -> object:
            return await outcome

        return self.spawn(wait(), name)

    def on_stop(self, callback: Callable[[], object]) -> None:
        """Call `callback` (on the loop) once `stop` is set, for loops that do not await it."""

        async def wait_then_call() -> None:
            await self.stop.wait()
            callback()

        task = asyncio.get_running_loop().create_task(wait_then_call(), name="on-stop")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def fail(self, error: BaseException, what: str) -> None:
        """Record a failure (the first one decides the exit) and stop the service."""
        log.error("failure; stopping the service", exc_info=error, extra={"what": what})
        if self.failure is None:
            self.failure = error
        self.failed.set()
        self.stop.set()

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.fail(error, f"background task {task.get_name()} failed")
        elif not self.stop.is_set():
            self.fail(
                RuntimeError(f"background task {task.get_name()} ended before stop"),
                f"background task {task.get_name()} ended",
            )

    async def join(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the background tasks to end, then cancel the rest."""
        pending = set(self._tasks)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            log.warning("background task did not stop in time", extra={"task": task.get_name()})
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def raise_failure(self) -> None:
        """Re-raise the recorded failure (for a main that must end with it)."""
        if self.failure is not None:
            raise self.failure


@dataclass(frozen=True)
class Service(Generic[S]):
    """What the runtime needs to know about one service."""

    prog: str  # the package run with `python -m`, prefixes settings errors
    name: str  # the `service` field of every log line
    load: Callable[[], S]  # reads the settings from the environment
    common: Callable[[S], CommonSettings]
    metrics_port: Callable[[S], int]  # 0: no metrics server
    stop_timeout_s: Callable[[S], float]  # bound on stopping after a failure
    main: Callable[[S, Runtime], Awaitable[None]]


def load_settings(prog: str, load: Callable[[], S]) -> S:
    """The settings, or exit 2 with the bad variable named on stderr."""
    try:
        return load()
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_SETTINGS) from None


def describe(settings: object) -> dict[str, object]:
    """The settings as loggable fields: nested dataclasses flattened with dots; fields
    declared `repr=False` or named like a secret left out, passwords in URLs masked."""
    out: dict[str, object] = {}

    def walk(value: object, prefix: str) -> None:
        for f in dataclasses.fields(value):  # type: ignore[arg-type]
            if not f.repr or any(word in f.name for word in _SECRET_WORDS):
                continue
            item = getattr(value, f.name)
            key = prefix + f.name
            if dataclasses.is_dataclass(item) and not isinstance(item, type):
                walk(item, key + ".")
            elif isinstance(item, str):
                out[key] = _URL_USERINFO.sub("***@", item)  # redis://:password@host
            elif isinstance(item, int | float | bool) or item is None:
                out[key] = item
            elif isinstance(item, tuple | list | frozenset | set):
                out[key] = [str(x) for x in item]
            elif isinstance(item, Mapping):
                out[key] = sorted(str(k) for k in item)  # names only: values may be secret
            else:
                out[key] = str(item)

    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        walk(settings, "")
    return out


def start_logs(service: str, settings: object, common: CommonSettings) -> None:
    """JSON logs at the configured level, and the settings as the first line."""
    logs.setup(service, common.log_level)
    log.info("settings", extra={"settings": describe(settings)})


def serve(
    main: Callable[[Runtime], Awaitable[None]],
    *,
    metrics_port: int,
    metrics_host: str,
    stop_timeout_s: float,
    liveness_limit_s: float = DEFAULT_LIMIT_S,
    liveness_group_limit_s: float = DEFAULT_GROUP_LIMIT_S,
) -> int:
    """Start the metrics server and run `main` on uvloop under signals and supervision;
    returns the exit code."""
    HEALTH.limit_s = liveness_limit_s
    HEALTH.group_limit_s = liveness_group_limit_s
    starting = HEALTH.hold("main")  # taken before the probe can answer
    serve_metrics(metrics_port, metrics_host)
    return uvloop.run(_supervise(main, stop_timeout_s, starting))


def run(service: Service[S]) -> int:
    """The whole life of a service process; returns its exit code."""
    settings = load_settings(service.prog, service.load)
    common = service.common(settings)
    start_logs(service.name, settings, common)
    return serve(
        lambda rt: service.main(settings, rt),
        metrics_port=service.metrics_port(settings),
        metrics_host=common.metrics_host,
        stop_timeout_s=service.stop_timeout_s(settings),
        liveness_limit_s=common.liveness_limit_s,
        liveness_group_limit_s=common.liveness_group_limit_s,
    )


async def _supervise(
    main: Callable[[Runtime], Awaitable[None]],
    stop_timeout_s: float,
    starting: Callable[[], None],
) -> int:
    rt = Runtime()
    rt.hold_until_started(starting)
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if stopping:
            log.warning("second signal; exiting at once", extra={"signal": name})
            os._exit(EXIT_FORCED)
        stopping = True
        log.info("signal received; stopping", extra={"signal": name})
        rt.stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    async def main_task() -> None:
        await main(rt)

    rt.spawn(beat_loop(rt), "loop-heartbeat")
    running = loop.create_task(main_task(), name="main")
    watchdog = loop.create_task(_watchdog(rt, stop_timeout_s), name="watchdog")
    try:
        await running
    except Exception as exc:  # any failure of main ends the process with 1
        if exc is not rt.failure:
            rt.fail(exc, "service failed")
    rt.stop.set()  # main returned: whatever still runs in the background stops too
    await rt.join(stop_timeout_s)
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog
    if rt.failure is not None:
        log.error("stopped after a failure", extra={"error": repr(rt.failure)})
        return EXIT_FAILED
    log.info("stopped")
    return EXIT_OK


async def beat_loop(rt: Runtime) -> None:
    """Stamp the event loop's beat every second (a quarter of the limit if that is less)
    until stop; a loop blocked by a call that never returns stops stamping, and /livez
    says so."""
    interval_s = min(LOOP_BEAT_INTERVAL_S, rt.health.limit_s / 4)
    beat = rt.health.beat("event-loop")
    while not rt.stop.is_set():
        beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.stop.wait(), interval_s)
    rt.health.stopping = True  # the drain is bounded by the runtime, not by the probe
    rt.health.retire(beat)


async def _watchdog(rt: Runtime, stop_timeout_s: float) -> None:
    """After a failure, give the service its bound to stop, then end the process."""
    await rt.failed.wait()  # a requested stop alone: a second signal is the way out
    await asyncio.sleep(2 * stop_timeout_s)  # the drain's bound, then join's
    log.error(
        "the service did not stop after a failure; exiting", extra={"bound_s": stop_timeout_s}
    )
    os._exit(EXIT_FAILED)
