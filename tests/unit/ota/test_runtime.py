"""The shared service runtime (ota/runtime.py), run as real processes and on real asyncio:
exit 2 naming a bad setting, a crashed background task stops the service with 1 and its
traceback, a signal drains and exits 0, a second signal exits 130."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.demo_env import free_port
from ota.runtime import EXIT_FAILED, EXIT_FORCED, EXIT_OK, EXIT_SETTINGS, Runtime, describe
from ota.settings import CommonSettings

REPO = Path(__file__).resolve().parents[3]
APP = Path(__file__).with_name("runtime_app.py")


class App:
    """`python runtime_app.py <mode>` with its stderr read line by line."""

    def __init__(self, mode: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(APP), mode],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_log(self, text: str, timeout_s: float = 20.0) -> None:
        with self._seen:
            found = self._seen.wait_for(lambda: any(text in ln for ln in self.lines), timeout_s)
        assert found, f"{text!r} not logged; got {''.join(self.lines)}"

    def exit_code(self, timeout_s: float = 20.0) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        return code

    def records(self) -> list[dict[str, object]]:
        return [json.loads(ln) for ln in self.lines if ln.startswith("{")]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)
        for pipe in (self.process.stdin, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def app() -> Iterator[Callable[..., App]]:
    started: list[App] = []

    def start(mode: str, env: dict[str, str] | None = None) -> App:
        started.append(App(mode, env))
        return started[-1]

    yield start
    for one in started:
        one.kill()


def test_bad_settings_exit_2_naming_the_variable(app: Callable[[str], App]) -> None:
    run = app("bad-settings")
    assert run.exit_code() == EXIT_SETTINGS
    assert "runtime_app: OTA_APP_WIDGETS='many' is not an integer" in "".join(run.lines)


@pytest.mark.parametrize("module", ["gateway", "workers", "scheduler", "download_edge"])
def test_every_service_exits_2_on_a_bad_setting(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**os.environ, "OTA_PARTITIONS": "twelve"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_SETTINGS
    assert f"{module}: OTA_PARTITIONS='twelve' is not an integer" in done.stderr


def test_signal_drains_and_exits_0(app: Callable[[str], App]) -> None:
    run = app("graceful")
    run.wait_log('"ready"')
    run.process.send_signal(signal.SIGTERM)
    assert run.exit_code() == EXIT_OK
    drained = [r for r in run.records() if r["msg"] == "drained"]
    assert drained
    assert drained[0]["thread_stopped"] is True
    settings = next(r for r in run.records() if r["msg"] == "settings")["settings"]
    assert isinstance(settings, dict)
    assert settings["mode"] == "graceful"
    assert "password" not in settings
    assert "common.mqtt_platform_password" not in settings


def test_second_signal_exits_130_at_once(app: Callable[[str], App]) -> None:
    run = app("slow-drain")
    run.wait_log('"ready"')
    run.process.send_signal(signal.SIGINT)
    run.wait_log('"draining"')
    run.process.send_signal(signal.SIGTERM)
    assert run.exit_code() == EXIT_FORCED
    assert any(r["msg"] == "second signal; exiting at once" for r in run.records())


@pytest.mark.parametrize(
    ("mode", "error"),
    [("task-crash", "boom in a background task"), ("thread-crash", "boom in a background thread")],
)
def test_a_crashed_background_task_stops_the_service_loudly(
    app: Callable[[str], App], mode: str, error: str
) -> None:
    run = app(mode)
    assert run.exit_code() == EXIT_FAILED
    failures = [r for r in run.records() if r["level"] == "error" and "exc" in r]
    assert failures, "".join(run.lines)
    assert "Traceback" in str(failures[0]["exc"])
    assert error in str(failures[0]["exc"])


def test_a_task_ending_by_itself_stops_the_service(app: Callable[[str], App]) -> None:
    run = app("task-ends")
    assert run.exit_code() == EXIT_FAILED
    assert any("short ended" in str(r.get("what")) for r in run.records())


def test_a_service_that_hangs_after_a_crash_is_ended(app: Callable[[str], App]) -> None:
    run = app("hang-after-crash")
    assert run.exit_code() == EXIT_FAILED
    assert any("did not stop after a failure" in str(r["msg"]) for r in run.records())


def test_a_thread_that_never_returns_does_not_keep_the_process(app: Callable[[str], App]) -> None:
    run = app("stuck-thread")
    assert run.exit_code(timeout_s=10) == EXIT_FAILED
    assert any(r["msg"] == "background task did not stop in time" for r in run.records())


async def test_runtime_in_process_records_the_first_failure_and_stops() -> None:
    stop = asyncio.Event()
    rt = Runtime(stop)
    failed = asyncio.Event()

    async def fails() -> None:
        failed.set()
        raise ValueError("first")

    async def waits() -> None:
        await rt.stop.wait()

    rt.spawn(waits(), "waits")
    rt.spawn(fails(), "fails")
    await asyncio.wait_for(stop.wait(), 5)
    await rt.join(5)
    assert isinstance(rt.failure, ValueError)
    assert str(rt.failure) == "first"
    with pytest.raises(ValueError, match="first"):
        rt.raise_failure()


async def test_join_cancels_a_task_that_ignores_stop() -> None:
    rt = Runtime()
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    rt.spawn(stubborn(), "stubborn")
    rt.stop.set()
    await rt.join(0.05)
    assert cancelled.is_set()
    assert rt.failure is None


def test_describe_flattens_and_leaves_secrets_out() -> None:
    fields = describe(
        CommonSettings.from_env(
            {
                "OTA_MQTT_PLATFORM_PASSWORD": "hunter2hunter2",
                "OTA_REDIS_URL": "redis://:hunter3hunter3@redis:6379/0",
            }
        )
    )
    assert fields["kafka_bootstrap"] == "127.0.0.1:9092"
    assert fields["topics.inbox"] == "ota.inbox"
    assert fields["partitions"] == 12
    assert "hunter2hunter2" not in repr(fields)
    assert fields["redis_url"] == "redis://***@redis:6379/0"
    assert not any("token_keys" in key or "password" in key for key in fields)


async def test_a_watched_task_is_supervised_like_a_spawned_one() -> None:
    rt = Runtime()

    async def loop_that_breaks() -> None:
        raise OSError("sweeper broke")

    task = asyncio.get_running_loop().create_task(loop_that_breaks())
    assert rt.watch(task) is task
    await asyncio.wait_for(rt.stop.wait(), 5)
    assert isinstance(rt.failure, OSError)


async def test_a_cancelled_task_is_not_a_failure() -> None:
    rt = Runtime()
    task = rt.spawn(asyncio.Event().wait(), "cancelled-by-its-owner")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rt.failure is None
    assert not rt.stop.is_set()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_a_service_is_not_ready_before_its_main_says_it_started(
    app: Callable[..., App],
) -> None:
    port = free_port()
    run = app("never-started", {"APP_METRICS_PORT": str(port)})
    run.wait_log('"not started"')
    base = f"http://127.0.0.1:{port}"
    assert _get(base + "/readyz") == (503, "starting: main\n")
    assert _get(base + "/livez")[0] == 200


def test_a_blocked_event_loop_fails_livez_while_metrics_still_answer(
    app: Callable[..., App],
) -> None:
    port = free_port()
    run = app("hang-loop", {"APP_METRICS_PORT": str(port), "OTA_LIVENESS_LIMIT_S": "1"})
    run.wait_log('"ready"')
    base = f"http://127.0.0.1:{port}"
    assert _get(base + "/livez") == (200, "ok\nfresh: event-loop\n")
    assert _get(base + "/readyz") == (200, "ok\nfresh: event-loop\n")

    assert run.process.stdin is not None
    run.process.stdin.write("block\n")
    run.process.stdin.flush()
    run.wait_log('"blocking the loop"')
    deadline = time.monotonic() + 10  # the beat goes stale one limit (1 s) after the block
    while (answer := _get(base + "/livez"))[0] == 200:
        assert time.monotonic() < deadline, "/livez never noticed the blocked loop"
        time.sleep(0.1)
    assert answer == (503, "stale: event-loop\n")
    assert _get(base + "/readyz") == (503, "stale: event-loop\n")
    assert _get(base + "/metrics")[0] == 200  # all the old probe asked: "alive"
