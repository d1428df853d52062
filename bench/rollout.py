"""The fleet rollout benchmark: N simulated devices through the whole pipeline.

    .venv/bin/python bench/rollout.py --size 10000 --mode connections --package-kib 64
    .venv/bin/python bench/rollout.py --size 100000 --mode multiplexed --package-kib 64 \
        --fleet-processes 2
    .venv/bin/python bench/rollout.py --size 10000 --scale workers=2,gateway=2 --edge-processes 2
    .venv/bin/python bench/rollout.py --size 10000 --redis-cluster

Each run starts its own stack under `ota up` (own topic prefix, Redis db 9, free ports),
a well-behaved fleet in its own process, uploads the package and creates one task with
no rate limit. While the task runs it samples, every second, the task's per-state
counts and the CPU time of every service process, of the fleet's simulator processes and
of the shared infrastructure (Kafka, Redis, the device broker, found by the pid files of
deploy/local under .state/; their CPU includes whatever else uses them meanwhile), all
from /proc; `cpu_ms_per_device` divides each by the fleet size. At the end it reads the
job events back from Kafka for the per-device time from release to success, and
records: devices completed per second (whole task and steady middle 80%), time to
finish, p50/p99 per device, CPU seconds per service, Redis memory (`redis.bytes_per_device`:
every key's MEMORY USAGE `--settle-s` after the task finished, split per key family, and
what stays once the keys with a TTL expired), Kafka bytes, and a py-spy profile of the
busiest service. With `--redis-cluster` every service uses a private three-master Redis
Cluster (tests/redis_cluster_kit.py, no persistence), the device credentials staying on
the local Redis: the cluster's CPU is counted as `redis-cluster`, its memory above the
empty cluster's as `redis_cluster`, and the Redis families are measured on the cluster. Outputs go to bench/rollout/<label>.{json,png,svg}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
# A third-party wheel installs a `tests` package into site-packages; the repository's
# tests (the private Redis Cluster's kit lives there) must win.
_tests = types.ModuleType("tests")
_tests.__path__ = [str(REPO / "tests")]
sys.modules["tests"] = _tests

from redis_families import bytes_by_family, per_device  # noqa: E402
from rollout_report import (  # noqa: E402
    PRODUCED_BY,
    first_record_after,
    job_latencies,
    kafka_bytes,
    plot_states,
    proc_cpu_s,
    redis_bytes,
    steady_rate,
)

from ops.demo_env import Ports, StackPlan, redis_url_with_db  # noqa: E402
from ops.demo_stack import Stack  # noqa: E402
from ops.fleet_group import (  # noqa: E402
    FleetGroup,
    default_fleet_processes,
    forget_fleet,
    register_fleet,
)
from ops.rollout_api import create_task, upload_package, upload_targets  # noqa: E402
from ops.supervisor import parse_scale  # noqa: E402
from ota.redis_clients import make_redis  # noqa: E402
from ota.settings import CommonSettings  # noqa: E402
from tests.redis_cluster_kit import PrivateRedisCluster  # noqa: E402

OUT = REPO / "bench" / "rollout"
REDIS_DB = 9
INFRA = ("kafka", "redis", "broker")  # deploy/local's services, by pid file
FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")
# Windows short enough that a report the broker lost is settled within the run (retry, or
# the last version query), as a real fleet's would be within the day; no rate limit.
POLICY = {
    "retry_count": 3,
    "retry_interval_min": 0,
    "timeouts": {
        "online_s": 300,
        "version_s": 30,
        "download_start_s": 60,
        "download_finish_s": 120,
        "update_start_s": 60,
        "result_s": 60,
        "verify_s": 30,
        "upgrade_total_s": 90,
    },
    # 10,000 devices released at once finish well inside the 30 s version window on this
    # machine (p99 release->success 18 s); beyond that the backlog outgrows the window.
    "max_in_flight": 10_000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="OTA fleet rollout benchmark")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--mode", choices=("connections", "multiplexed"), default="connections")
    parser.add_argument("--mux-connections", type=int, default=4)
    parser.add_argument(
        "--fleet-processes",
        type=int,
        default=0,
        help="simulator processes (default: 2 from 5000 devices, else 1)",
    )
    parser.add_argument("--package-kib", type=int, default=64)
    parser.add_argument("--scale", default="", help="e.g. workers=2,gateway=2")
    parser.add_argument("--edge-processes", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--timeout-s", type=float, default=1800)
    parser.add_argument("--profile-s", type=float, default=15, help="py-spy duration (0: off)")
    parser.add_argument("--label", default="", help="output name (default from the options)")
    parser.add_argument(
        "--kill",
        action="append",
        default=[],
        metavar="SERVICE@SECONDS",
        help="kill -9 a service (workers, gateway) this long after the task was created; the"
        " supervisor restarts it; the result gives the time to its first record afterwards",
    )
    parser.add_argument(
        "--kafka-data",
        type=Path,
        default=REPO / ".state" / "kafka" / "data",
        help="the broker's log directory (for the run's Kafka bytes)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="every service on a private three-master Redis Cluster (the device"
        " credentials stay on the local Redis)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where results go")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=10.0,
        help="wait after the task finished before measuring Redis (the webhook dispatcher"
        " trims delivered notifications every 5 s)",
    )
    args = parser.parse_args(argv)
    args.fleet_processes = args.fleet_processes or default_fleet_processes(args.size)
    args.kills = [parse_kill(spec, parser) for spec in args.kill]
    return args


def parse_kill(spec: str, parser: argparse.ArgumentParser) -> tuple[str, float]:
    service, _, seconds = spec.partition("@")
    if service not in PRODUCED_BY or not seconds.replace(".", "", 1).isdigit():
        parser.error(f"--kill {spec!r} is not <{'|'.join(PRODUCED_BY)}>@<seconds>")
    return service, float(seconds)


def kill_due(stack: Stack, kills: list[tuple[str, float]], elapsed: float) -> list[dict[str, Any]]:
    """SIGKILLs each service whose time has come (and drops it from `kills`)."""
    done = []
    for service, at in [k for k in kills if k[1] <= elapsed]:
        kills.remove((service, at))
        pid = stack.pids()[service]
        os.kill(pid, signal.SIGKILL)
        done.append(
            {"service": service, "pid": pid, "t": round(elapsed, 1), "at_ms": time.time() * 1000}
        )
        print(f"[bench] killed {service} (pid {pid}) at t={elapsed:.1f}s", flush=True)
    return done


def label_of(args: argparse.Namespace) -> str:
    scale = f"-x{args.scale.replace(',', '-').replace('=', '')}" if args.scale else ""
    edges = f"-edge{args.edge_processes}" if args.edge_processes > 1 else ""
    sims = f"-sim{args.fleet_processes}" if args.fleet_processes > 1 else ""
    return args.label or f"{args.mode}-{args.size}-{args.package_kib}k{scale}{edges}{sims}"


def service_pids(stack: Stack) -> dict[str, list[int]]:
    """Each service's process and its children (the edge forks with OTA_EDGE_PROCESSES)."""
    out: dict[str, list[int]] = {}
    for name, pid in stack.pids().items():
        children = Path(f"/proc/{pid}/task/{pid}/children")
        kids = [int(k) for k in children.read_text().split()] if children.exists() else []
        out[name] = [pid, *kids]
    return out


def infra_pids(state_dir: Path = REPO / ".state") -> dict[str, list[int]]:
    """Kafka, Redis and the device broker of the local stack (those whose pid file names a live
    process)."""
    out: dict[str, list[int]] = {}
    for name in INFRA:
        try:
            pid = int((state_dir / name / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            out[name] = [pid]
    return out


def per_device_ms(cpu_s: dict[str, float], size: int) -> dict[str, float]:
    per = {name: round(seconds * 1000 / size, 2) for name, seconds in cpu_s.items()}
    per["total"] = round(sum(cpu_s.values()) * 1000 / size, 2)
    return per


class Sampler:
    """Per-second samples of the task's state counts and each process's CPU seconds."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.states: list[tuple[float, dict[str, int]]] = []
        self.last: dict[int, float] = {}  # each process's CPU when last seen alive
        self.cpu0 = self.cpu()

    def replace(self, name: str, pids: list[int]) -> None:
        """A restarted service: its new processes count from 0, the dead ones keep what
        they had used."""
        self.pids[name] = [*self.pids[name], *(p for p in pids if p not in self.pids[name])]

    def cpu(self) -> dict[str, float]:
        for pids in self.pids.values():
            for pid in pids:
                used = proc_cpu_s(pid)
                if used or pid not in self.last:
                    self.last[pid] = used
        return {name: sum(self.last[p] for p in pids) for name, pids in self.pids.items()}

    def add(self, task: dict[str, Any]) -> None:
        counts = dict((task.get("counts") or {}).get("states") or {})
        pending = task["progress"]["total"] - sum(counts.values())
        counts["PENDING"] = max(0, pending)
        self.states.append((time.monotonic() - self.t0, counts))
        self.cpu()  # so that a process killed later keeps what it used until now

    def cpu_used(self) -> dict[str, float]:
        now = self.cpu()
        return {name: round(now[name] - self.cpu0.get(name, 0.0), 1) for name in now}


def profile(pid: int, seconds: float, target: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "50",
            "--format",
            "speedscope" if target.suffix == ".json" else "flamegraph",
            "--output",
            str(target),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    label = label_of(args)
    run_id = uuid.uuid4().hex[:6]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    base_redis = os.environ.get("OTA_REDIS_URL") or "redis://127.0.0.1:6379/0"
    r = redis.Redis.from_url(redis_url_with_db(base_redis, REDIS_DB))
    r.flushdb()
    extra = {"OTA_EDGE_PROCESSES": str(args.edge_processes), "OTA_LOG_LEVEL": "WARNING"}
    cluster, cluster_empty = None, (0, 0)
    if args.redis_cluster:
        cluster = PrivateRedisCluster(REPO / ".state" / f"bench-{run_id}-cluster")
        cluster.start()
        cluster_empty = cluster_memory(cluster)
        extra["OTA_REDIS_URL"] = cluster.url
    plan = StackPlan(
        state_dir=REPO / ".state" / f"bench-{run_id}",
        name=f"bench-{run_id}",
        topic_prefix=f"bench-{run_id}.",
        redis_db=REDIS_DB,
        partitions=args.partitions,
        ports=Ports.free(),
        extra=extra,
    )
    stack = Stack(plan, scale=parse_scale(args.scale))
    stack.start(timeout_s=300)
    stack.watch()
    package = os.urandom(args.package_kib * 1024)
    prefix = f"b{run_id}"
    fleet = FleetGroup(
        stack.env,
        size=args.size,
        processes=args.fleet_processes,
        prefix=prefix,
        mode=args.mode,
        mux_connections=args.mux_connections,
        mix="none",
        report_every_s=10,
    )
    result: dict[str, Any] = {"label": label, "args": {k: str(v) for k, v in vars(args).items()}}
    headers = {"Authorization": f"Bearer {plan.write_key}"}
    ids = [f"{prefix}-{n:07d}" for n in range(args.size)]
    try:
        t_register = time.monotonic()
        result["credentials"] = await register_fleet(plan, ids)
        result["register_s"] = round(time.monotonic() - t_register, 1)
        t_connect = time.monotonic()
        await fleet.start(timeout_s=max(300.0, args.size / 100))
        result["connect_s"] = round(time.monotonic() - t_connect, 1)
        pids = service_pids(stack)
        pids["fleet"] = fleet.pids()
        pids.update(infra_pids())
        if cluster is not None:
            pids["redis-cluster"] = [p.pid for p in cluster.processes]
        async with httpx.AsyncClient(base_url=plan.api_url, headers=headers, timeout=120) as api:
            package_id = await upload_package(api, package, "bench.bin")
            list_id = await upload_targets(api, ids)
            sampler = Sampler(pids)
            tid = await create_task(api, package_id, list_id, POLICY, f"bench {label}")
            t0 = time.monotonic()
            kills, killed = list(args.kills), list[dict[str, Any]]()
            spy: subprocess.Popen[bytes] | None = None
            task: dict[str, Any] = {}
            while time.monotonic() - t0 < args.timeout_s:
                answer = await api.get(f"/v1/tasks/{tid}")
                if answer.status_code == 200:
                    task = answer.json()
                    sampler.add(task)
                    done = task["progress"]["finished"]
                    if spy is None and args.profile_s and done >= args.size * 0.2:
                        cpu = sampler.cpu_used()
                        busiest = max(
                            (n for n in cpu if n != "fleet" and n not in INFRA),
                            key=lambda n: cpu[n],
                            default=None,
                        )
                        if busiest is not None:
                            result["profiled"] = busiest
                            spy = profile(
                                pids[busiest][-1], args.profile_s, out / f"{label}-{busiest}.svg"
                            )
                    if len(sampler.states) % 10 == 1:
                        print(json.dumps({"t": round(time.monotonic() - t0), **task["progress"]}))
                    if task["status"] in FINISHED:
                        break
                if killed:  # count the restarted processes too
                    for kill in killed:
                        sampler.replace(
                            kill["service"], service_pids(stack).get(kill["service"], [])
                        )
                killed += kill_due(stack, kills, time.monotonic() - t0)
                await asyncio.sleep(0.2 if kills else 1.0)
            elapsed = time.monotonic() - t0
            if spy is not None:
                spy.wait(60)
        result["cpu_s"] = sampler.cpu_used()
        result["cpu_ms_per_device"] = per_device_ms(result["cpu_s"], args.size)
        result["wall_s"] = round(elapsed, 1)
        result["status"] = task.get("status")
        result["progress"] = task.get("progress")
        finished = int((task.get("progress") or {}).get("finished") or 0)
        succeeded = int((task.get("progress") or {}).get("succeeded") or 0)
        result["devices_per_s"] = round(succeeded / elapsed, 1) if elapsed else 0.0
        result["steady_devices_per_s"] = round(steady_rate(sampler.states), 1)
        result["finished"] = finished
        await asyncio.sleep(args.settle_s)
        info = r.info("memory")
        result["redis_used_memory_mb"] = round(int(info["used_memory"]) / 2**20, 1)
        result["redis_db_keys"] = int(r.dbsize())
        result["redis_db_bytes"] = redis_bytes(r)
        # Every key measured (not sampled), split per key family: redis.bytes_per_device.
        measured = r if cluster is None else make_redis(CommonSettings.from_env({}), cluster.url)
        memory = per_device(bytes_by_family(measured), args.size)
        result["redis.bytes_per_device"] = memory["bytes_per_device"]
        result["redis_families"] = memory
        print(json.dumps({"redis_families": memory}, indent=2), flush=True)
        if cluster is not None:
            used, keys = (
                a - b for a, b in zip(cluster_memory(cluster), cluster_empty, strict=True)
            )
            result["redis_cluster"] = {
                "used_memory_mb": round(used / 2**20, 1),
                "keys": keys,
                "bytes_per_device": used // args.size,  # above the empty cluster's
            }
        result["kafka_bytes"] = kafka_bytes(args.kafka_data, plan.topic_prefix)
        result["latency_s"] = job_latencies(stack.env, plan.topic_prefix + "ota.job-events")
        for kill in killed:
            kill["recovery_s"] = first_record_after(
                stack.env, plan.topic_prefix, kill["service"], kill["at_ms"]
            )
        result["kills"] = killed
        plot_states(sampler.states, out / f"{label}.png", title=f"{label}: devices per state")
        result["fleet"] = await fleet.stop()
        # Written before the clean-up, which a slow server can fail after a long run.
        (out / f"{label}.json").write_text(json.dumps(result, indent=2))
    finally:
        await fleet.stop()
        stack.stop()
        r.flushdb(asynchronous=True)  # millions of keys: freed in the background
        forget_fleet(stack.env, ids)
        stack.delete_topics()
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.directory, ignore_errors=True)
    return result


def cluster_memory(cluster: PrivateRedisCluster) -> tuple[int, int]:
    """The memory (bytes) and keys of every master together."""
    used, keys = 0, 0
    for port in cluster.ports:
        node = redis.Redis(host="127.0.0.1", port=port)
        try:
            used += int(node.info("memory")["used_memory"])
            keys += int(node.dbsize())
        finally:
            node.close()
    return used, keys


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # cleanup runs as on Ctrl-C (background jobs ignore SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    result = asyncio.run(run(args))
    print(json.dumps({k: v for k, v in result.items() if k != "fleet"}, indent=2))
    return 0 if result.get("status") in FINISHED else 1


if __name__ == "__main__":
    sys.exit(main())
