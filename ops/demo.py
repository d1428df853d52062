"""`make demo`: a whole rollout on this machine, from an empty stack to a summary.

1. the local stack (Kafka, Redis, Mosquitto) up: `deploy/local/up`;
2. the gateway, workers, download edge and scheduler under `ota up` (logs in
   `<state dir>/logs/`), with one consistent set of settings (`ops.demo_env`);
3. a sample firmware package uploaded through the API (`ops.rollout_api`);
4. a simulated fleet with a realistic mix (`ops.demo_fleet`) in its own process;
5. a task with a canary wave and an exponential rate ramp, live progress until it ends;
6. a summary: outcomes, failure causes, duration, devices per second, where to look next.
Everything started is stopped at the end unless `--keep-running`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from devices.fleet import device_name
from ops.demo_env import StackPlan, stack_env
from ops.demo_fleet import Mix, verdict
from ops.demo_progress import Progress, summary_lines
from ops.demo_stack import REPO, Stack
from ops.fleet_group import SPLIT_FLEET_AT, FleetGroup, default_fleet_processes, register_fleet
from ops.rollout_api import create_task, upload_package, upload_targets

FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")
# Each run has its own topics (demo-<run>.ota.*) and starts from an empty Redis db, so
# nothing of an earlier run (or of anything else on the machine) is replayed into it.
DEMO_REDIS_DB = 8


def flush_db(env: dict[str, str]) -> None:
    client = redis.Redis.from_url(env["OTA_REDIS_URL"])
    try:
        client.flushdb()
    finally:
        client.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.demo", description="Run a whole OTA rollout on this machine."
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
    print(f"[demo] credentials: {await register_fleet(plan, ids)}", flush=True)
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
            package_id = await upload_package(
                api,
                package,
                "demo-firmware-2.0.bin",
                allowed_sources="1.0,1.1",
                description="make demo sample firmware",
            )
            print(f"[demo] package {package_id} uploaded ({len(package) // 1024} KiB)", flush=True)
            list_id = await upload_targets(api, ids)
            tid = await create_task(api, package_id, list_id, policy(args), f"demo rollout {run}")
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
        from ops.supervisor import parse_scale

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
            stack.delete_topics()
    return code


if __name__ == "__main__":
    sys.exit(main())
