"""`make demo`: a whole rollout on this machine, from an empty stack to a summary.

1. the local stack (Kafka, Redis, Mosquitto) up: `deploy/local/up`;
2. the gateway, workers, download edge and scheduler under `ota up` (logs in
   `<state dir>/logs/`), with one consistent set of settings (`ota.demo_env`);
3. a sample firmware package uploaded through the API;
4. a simulated fleet with a realistic mix (`ota.demo_fleet`) in its own process;
5. a task with a canary wave and an exponential rate ramp, live progress until it ends;
6. a summary: outcomes, failure causes, duration, devices per second, where to look next.
Everything started is stopped at the end unless `--keep-running`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from kafka.admin import KafkaAdminClient

from devices.fleet import device_name, fleet_credentials
from devices.report import merge
from ota.demo_env import StackPlan, stack_env
from ota.demo_fleet import Mix, verdict
from ota.demo_progress import Progress, summary_lines
from ota.demo_stack import REPO, Stack, StackError

FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")
# Each run has its own topics (demo-<run>.ota.*) and starts from an empty Redis db, so
# nothing of an earlier run (or of anything else on the machine) is replayed into it.
DEMO_REDIS_DB = 8
# From this many devices a fleet is simulated by two processes (two cores) by default.
SPLIT_FLEET_AT = 5_000


def flush_db(env: dict[str, str]) -> None:
    client = redis.Redis.from_url(env["OTA_REDIS_URL"])
    try:
        client.flushdb()
    finally:
        client.close()


def delete_topics(env: dict[str, str], prefix: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=env.get("OTA_KAFKA_BOOTSTRAP") or "127.0.0.1:9092")
    try:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
    finally:
        admin.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ota.demo", description="Run a whole OTA rollout on this machine."
    )
    parser.add_argument(
        "--size", type=int, default=10_000, help="devices (default 10000; see docs/demo.md)"
    )
    parser.add_argument(
        "--mode",
        choices=("connections", "multiplexed"),
        default="connections",
        help="one MQTT connection per device, or a few shared ones (large fleets)",
    )
    parser.add_argument(
        "--mix",
        default="",
        help="percent per kind: offline_back, offline_gone, on_target, unsupported, fails, "
        "resume (default 5,1,5,2,2,5); `none` for an all well-behaved fleet",
    )
    parser.add_argument("--package-kib", type=int, default=256, help="firmware size in KiB")
    parser.add_argument(
        "--fleet-processes",
        type=int,
        default=0,
        help=f"simulator processes (default: 2 from {SPLIT_FLEET_AT} devices, else 1)",
    )
    parser.add_argument("--canary", type=int, default=0, help="canary wave size (default 1%%)")
    parser.add_argument("--canary-threshold", type=float, default=70.0, help="percent to pass")
    parser.add_argument("--ramp", default="6000,2,500,120000", help="base/min,factor,every,max/min")
    parser.add_argument("--online-window-s", type=int, default=45)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="give up after this long")
    parser.add_argument("--state-dir", type=Path, default=REPO / ".state" / "demo")
    parser.add_argument("--scale", default="", help="replicas, e.g. workers=2,gateway=2")
    parser.add_argument(
        "--redis-db", type=int, default=DEMO_REDIS_DB, help="the demo's own Redis db (flushed)"
    )
    parser.add_argument("--no-stack-up", action="store_true", help="do not run deploy/local/up")
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the services running at the end"
    )
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be at least 1")
    if args.fleet_processes < 0:
        parser.error("--fleet-processes must not be negative")
    args.fleet_processes = args.fleet_processes or default_fleet_processes(args.size)
    try:
        Mix.parse(args.mix)
        base, factor, every, top = args.ramp.split(",")
        args.ramp = {
            "base_per_min": int(base),
            "factor": float(factor),
            "every_successes": int(every),
            "max_per_min": int(top),
        }
    except ValueError as exc:
        parser.error(f"{exc} (--ramp is base_per_min,factor,every_successes,max_per_min)")
    return args


def policy(args: argparse.Namespace) -> dict[str, Any]:
    canary = args.canary or max(10, args.size // 100)
    return {
        "waves": [
            {"count": min(canary, args.size), "success_threshold_pct": args.canary_threshold}
        ],
        "ramp": args.ramp,
        # Seconds, not IoTDA's hours: a report lost on the way (a broker dropping messages
        # under load) is settled by a retry or the last version query within the demo.
        "retry_count": 1,
        "retry_interval_min": 0,
        "timeouts": {
            "online_s": args.online_window_s,
            "version_s": 30,
            "download_start_s": 60,
            "download_finish_s": 120,
            "update_start_s": 60,
            "result_s": 60,
            "verify_s": 30,
            "upgrade_total_s": 120,
        },
    }


def default_fleet_processes(size: int) -> int:
    return 2 if size >= SPLIT_FLEET_AT else 1


def slices(size: int, parts: int) -> list[tuple[int, int]]:
    """(first index, count) of `parts` contiguous slices of a fleet, sizes within one."""
    parts = max(1, min(parts, size))
    base, extra = divmod(size, parts)
    out, first = [], 0
    for n in range(parts):
        count = base + (1 if n < extra else 0)
        out.append((first, count))
        first += count
    return out


def merge_ready(lines: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for line in lines:
        for kind, count in (line.get("kinds") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + count
    return {
        "ready": True,
        "online": sum(int(line.get("online", 0)) for line in lines),
        "connect_s": max(float(line.get("connect_s", 0.0)) for line in lines),
        "kinds": dict(sorted(kinds.items())),
    }


class FleetProcess:
    """`python -m ota.demo_fleet` as a child; JSON lines on its stdout."""

    def __init__(self, env: dict[str, str], **options: object) -> None:
        """`options` become the fleet's flags: `mux_connections=4` -> `--mux-connections 4`,
        `own_downlinks=True` -> `--own-downlinks` (False: left out)."""
        self.command = [sys.executable, "-m", "ota.demo_fleet"]
        for name, value in options.items():
            flag = f"--{name.replace('_', '-')}"
            if isinstance(value, bool):
                self.command += [flag] if value else []
            else:
                self.command += [flag, str(value)]
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.last: dict[str, Any] = {}
        self._following: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float) -> dict[str, Any]:
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        ready = await asyncio.wait_for(self._next("ready"), timeout_s)
        self._following = asyncio.get_running_loop().create_task(self._follow())
        return ready

    async def _next(self, key: str) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                raise StackError(f"the fleet exited ({self.process.returncode}) before {key}")
            line: dict[str, Any] = json.loads(raw)
            if key in line or "final" in line:
                return line

    async def _follow(self) -> None:
        with contextlib.suppress(StackError, ValueError):
            while True:
                line = await self._next("report")
                if "final" in line:
                    self.last = line["final"]
                    return
                self.last = line["report"]

    async def stop(self) -> dict[str, Any]:
        if self.process is None or self.process.returncode is not None:
            return self.last
        assert self.process.stdin is not None
        self.process.stdin.close()  # the fleet prints its final report, then exits
        try:
            await asyncio.wait_for(self.process.wait(), 60)
            if self._following is not None:
                await asyncio.wait_for(self._following, 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        return self.last


class FleetGroup:
    """One fleet simulated by `processes` FleetProcesses over contiguous index slices;
    their ready and report lines merged into one (`devices.report.merge`). Multiplexed
    slices subscribe to their own devices' down topics, so each gets only its commands."""

    def __init__(
        self, env: dict[str, str], *, size: int, processes: int = 1, **options: object
    ) -> None:
        parts = slices(size, processes)
        own = len(parts) > 1 and options.get("mode") == "multiplexed"
        self.members = [
            FleetProcess(env, size=count, first=first, own_downlinks=own, **options)
            for first, count in parts
        ]

    def pids(self) -> list[int]:
        return [m.process.pid for m in self.members if m.process is not None]

    async def start(self, timeout_s: float) -> dict[str, Any]:
        """Start every process and wait until all are ready (stopping them all if one fails)."""
        try:
            readies = await asyncio.gather(*(m.start(timeout_s) for m in self.members))
        except BaseException:
            await self.stop()
            raise
        return merge_ready(list(readies))

    @property
    def last(self) -> dict[str, Any]:
        return merge(m.last for m in self.members)

    async def stop(self) -> dict[str, Any]:
        return merge(await asyncio.gather(*(m.stop() for m in self.members)))


async def register_fleet(api: httpx.AsyncClient, device_ids: list[str]) -> str:
    """Registers the simulated devices' secrets (derived from the fleet's seed) through the
    bulk import, so that the broker lets them in; the import's summary line."""
    response = await api.post(
        "/v1/credentials/import", content=fleet_credentials(device_ids), timeout=600
    )
    response.raise_for_status()
    summary = [line for line in response.text.splitlines() if line.startswith("#")]
    if not summary or "aborted" in summary[-1]:
        raise StackError(f"registering the fleet failed: {response.text[-500:]}")
    return summary[-1].lstrip("# ")


def registrar(plan: StackPlan) -> Callable[[list[str]], Awaitable[str]]:
    """`FleetConfig.register` for a fleet on `plan`'s stack: the API's bulk import."""

    async def register(device_ids: list[str]) -> str:
        headers = {"Authorization": f"Bearer {plan.write_key}"}
        async with httpx.AsyncClient(base_url=plan.api_url, headers=headers) as api:
            return await register_fleet(api, device_ids)

    return register


async def upload_targets(api: httpx.AsyncClient, device_ids: list[str]) -> str:
    response = await api.post("/v1/target-lists", content="\n".join(device_ids).encode())
    response.raise_for_status()
    list_id: str = response.json()["list_id"]
    return list_id


async def rollout(args: argparse.Namespace, stack: Stack) -> int:
    plan = stack.plan
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    run, prefix = plan.name.removeprefix("demo-"), plan.name
    package = os.urandom(args.package_kib * 1024)
    fleet = FleetGroup(
        stack.env,
        size=args.size,
        processes=args.fleet_processes,
        prefix=prefix,
        mode=args.mode,
        mix=args.mix,
        package_size=len(package),
        back_after_s=args.online_window_s / 2,
    )
    headers = {"Authorization": f"Bearer {plan.write_key}"}
    ids = [device_name(prefix, n) for n in range(args.size)]
    async with httpx.AsyncClient(base_url=plan.api_url, headers=headers, timeout=60) as api:
        print(f"[demo] credentials: {await register_fleet(api, ids)}", flush=True)
    print(
        f"[demo] connecting {args.size} simulated devices ({args.mode}, "
        f"{len(fleet.members)} simulator processes) ...",
        flush=True,
    )
    started = time.monotonic()
    ready = await fleet.start(timeout_s=max(120.0, args.size / 50))
    print(
        f"[demo] fleet up in {time.monotonic() - started:.1f}s: "
        + ", ".join(f"{k} {v}" for k, v in ready["kinds"].items()),
        flush=True,
    )
    task: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=plan.api_url, headers=headers, timeout=60) as api:
        try:
            uploaded = await api.post(
                "/v1/packages",
                params={
                    "type": "firmware",
                    "version": "2.0",
                    "file_name": "demo-firmware-2.0.bin",
                    "allowed_sources": "1.0,1.1",
                    "description": "make demo sample firmware",
                },
                content=package,
            )
            uploaded.raise_for_status()
            pkg = uploaded.json()
            print(f"[demo] package {pkg['id']} uploaded ({len(package) // 1024} KiB)", flush=True)
            created = await api.post(
                "/v1/tasks",
                json={
                    "name": f"demo rollout {run}",
                    "type": "firmware",
                    "package_id": pkg["id"],
                    "targets": {"list_id": await upload_targets(api, ids)},
                    "policy": policy(args),
                },
            )
            if created.status_code != 201:
                raise StackError(f"creating the task failed: {created.text}")
            tid = created.json()["id"]
            t0 = time.monotonic()
            progress = Progress(sys.stdout, args.size)
            deadline = t0 + args.timeout_s
            while time.monotonic() < deadline and not interrupted.is_set():
                answer = await api.get(f"/v1/tasks/{tid}")
                if answer.status_code != 200:
                    print(f"[demo] reading the task: {answer.status_code} {answer.text[:200]}")
                    await asyncio.sleep(1.0)
                    continue
                task = answer.json()
                progress.show(task, time.monotonic() - t0)
                if task["status"] in FINISHED:
                    break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - t0
            progress.close()
        finally:
            devices = await fleet.stop()
    for line in summary_lines(task, elapsed, devices, plan, stack.metrics_urls()):
        print(line)
    if interrupted.is_set():
        print("[demo] interrupted")
        return 130
    if task.get("status") not in FINISHED:
        print(f"[demo] FAILED: the task did not finish within {args.timeout_s:.0f}s")
        return 1
    problems = verdict(task, ready["kinds"])
    for problem in problems:
        print(f"[demo] FAILED: {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_stack_up:
        print("[demo] local stack: deploy/local/up", flush=True)
        subprocess.run([str(REPO / "deploy" / "local" / "up")], check=True)
    run = uuid.uuid4().hex[:6]
    plan = StackPlan(
        state_dir=args.state_dir.resolve(),
        name=f"demo-{run}",
        topic_prefix=f"demo-{run}.",
        redis_db=args.redis_db,
    )
    flush_db(stack_env(plan))
    scale = {}
    if args.scale:
        from ota.supervisor import parse_scale

        scale = parse_scale(args.scale)
    stack = Stack(plan, scale=scale)
    print(f"[demo] starting services (ota up); logs in {plan.log_dir}", flush=True)
    stack.start()
    stack.watch()
    code = 1
    try:
        code = asyncio.run(rollout(args, stack))
    except KeyboardInterrupt:
        print("\n[demo] interrupted", flush=True)
        code = 130
    finally:
        if args.keep_running and stack.process is not None:
            print(
                f"[demo] services keep running (ota up pid {stack.process.pid}); "
                f"stop them with: kill {stack.process.pid}",
                flush=True,
            )
        else:
            print("[demo] stopping services", flush=True)
            stack.stop()
            delete_topics(stack.env, plan.topic_prefix)
    return code


if __name__ == "__main__":
    sys.exit(main())
