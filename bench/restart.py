"""The restart benchmarks: a rollout with Kafka, Redis or the device broker killed
(SIGKILL) and restarted mid-way.

    .venv/bin/python bench/restart.py --part kafka --size 2000 --outage-s 12
    .venv/bin/python bench/restart.py --part redis --size 10000 --outage-s 2
    .venv/bin/python bench/restart.py --part broker --size 10000 --outage-s 2
    .venv/bin/python bench/restart.py --part kafka-leader --size 2000
    .venv/bin/python bench/restart.py --part redis-flush --size 100000 --mode multiplexed \
        --mux-connections 8 --fleet-processes 2 --rate-per-min 15000 --kill-at 0.3

The part is a private one (the shared ones serve everyone on the machine), on free ports
with its own data directory: Kafka a one-node KRaft broker from the jars deploy/local/up
installed (the services then use Redis db 5), Redis a redis-server with the local stack's
persistence (AOF, fsync every second, so a kill loses up to the last second of writes;
the services then use the shared Kafka, and device credentials stay in the shared Redis,
where the device broker reads them), the device broker one from the build deploy/local/up
made (tests.integration.broker.broker_support: `.state/broker/lib` or OTA_BROKER_LIB) on
free ports, reading the device credentials from the shared Redis (the services then use
the shared Kafka and Redis db 5, and the services' and the fleet's OTA_MQTT_* settings name
it; a crashed broker keeps no sessions, so every device connects again, a reconnect
storm). With `--part kafka-leader` the services run on a private three-node KRaft cluster
(tests.kafka_cluster_kit: topics with replication factor 3 and min.insync.replicas 2,
data under .state/kafka-cluster, Redis db 5); one node is made the leader of every inbox
partition before the task, and the part killed is that node, which stays dead: the
outage is the cluster's failover (`--outage-s` does not apply). The four services run on
it under `ota up` with the shared device broker unless the broker is the part. A
well-behaved fleet is upgraded (no rate limit unless given), with a webhook registered
for device results; once `--kill-at` of it has finished, the part is
killed, left dead for `--outage-s`, and started again on its data. Figures, with <part>
kafka, redis or broker:

- `faults.<part>_restart_resume_s`: from the part answering again to the task's progress
  running (over the next 2 s) at half or more of its rate before the kill, or the task
  finishing;
- `faults.<part>_restart_timeouts`: devices whose job saw a failure cause, a retry or a
  second attempt (the fleet is well-behaved, so each of them was held up by the outage);
- `faults.<part>_restart_duplicate_commands`: commands of one kind a device was sent again
  under a new id (it would act on them again); `..._repeated_commands_same_id`: commands
  sent again with the same id (devices ignore a repeated event id);
- `faults.<part>_restart_duplicate_webhooks`: device results delivered again under a new
  id (a receiver cannot tell them apart); `..._repeated_webhooks_same_id`: deliveries of a
  notification already delivered (receivers deduplicate by id); `..._webhooks_missing`;
- `..._repeated_transitions`: job-event transitions in the log twice (the scheduler
  applies each once);
- the whole task's devices/s and wall time.

With `--part redis-flush` the services' private Redis is not killed but emptied (FLUSHALL)
and answers throughout: the scheduler and the workers stop when they find their state
gone, the supervisor starts them again, and they rebuild from Kafka (docs/scheduler.md,
"Known limits"). Its figures are `faults.flushall_*`; `faults.flushall_rebuild_s` counts
from the flush to the task's progress running at half its rate before it again (the
rebuilt scheduler releasing and the rebuilt workers applying).

For `kafka-leader` the figures are `faults.kafka_leader_kill_*`, and `resume_s` counts from
the kill (there is no restart): the whole pause a device sees, of which `failover_s` is
the kill to every inbox partition led by a surviving node with two replicas in sync.

Results go to bench/out/<part>_restart-<size>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]
# A third-party wheel installs a `tests` package into site-packages; the repository's
# tests (the fault run's driver lives there) must win.
_tests = types.ModuleType("tests")
_tests.__path__ = [str(REPO / "tests")]
sys.modules["tests"] = _tests

from ops.demo_env import redis_url_with_db  # noqa: E402
from tests.faults.restart_run import RestartRun, rollout_across_restart  # noqa: E402
from tests.integration.broker.broker_support import RestartableBroker, broker_lib  # noqa: E402
from tests.kafka_cluster_kit import (  # noqa: E402
    MIN_INSYNC_REPLICAS,
    REPLICAS,
    InboxLeaderKill,
    KafkaCluster,
    cluster_root,
)
from tests.kafka_kit import PrivateKafka  # noqa: E402
from tests.redis_kit import AOF_EVERYSEC, FlushedRedis, PrivateRedis  # noqa: E402
from tests.stack_kit import running_stack  # noqa: E402

OUT = REPO / "bench" / "out"
REDIS_DB = 5
NAMES = {"kafka-leader": "faults.kafka_leader_kill", "redis-flush": "faults.flushall"}
BROKER_HEAP = "1g"  # the stack's broker may grow to 768m; 10,000 sessions need room


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="rollout across a Kafka, Redis or broker restart")
    parser.add_argument(
        "--part",
        choices=("kafka", "redis", "redis-flush", "broker", "kafka-leader"),
        default="kafka",
    )
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--outage-s", type=float, default=12.0, help="the part dead this long")
    parser.add_argument("--kill-at", type=float, default=0.2, help="share finished at the kill")
    parser.add_argument("--rate-per-min", type=int, default=None, help="release rate (none)")
    parser.add_argument("--fleet-processes", type=int, default=1)
    parser.add_argument(
        "--mode",
        choices=("connections", "multiplexed"),
        default="connections",
        help="the fleet: a connection per device, or devices multiplexed over a few links",
    )
    parser.add_argument("--mux-connections", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument(
        "--broker-auth-timeout-ms",
        type=int,
        default=None,
        help="the private broker's OTA_BROKER_AUTH_TIMEOUT_MS (its default if not given)",
    )
    parser.add_argument(
        "--broker-connect-rate",
        type=int,
        default=None,
        help="the private broker's OTA_BROKER_CONNECT_RATE_PER_S (its default if not given)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the services' logs here at the end"
    )
    return parser.parse_args(argv)


def _broker_settings(args: argparse.Namespace) -> dict[str, str]:
    """The private broker's settings the options name (the others at their defaults)."""
    named = {
        "OTA_BROKER_AUTH_TIMEOUT_MS": args.broker_auth_timeout_ms,
        "OTA_BROKER_CONNECT_RATE_PER_S": args.broker_connect_rate,
    }
    return {name: str(value) for name, value in named.items() if value is not None}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base_redis = os.environ.get("OTA_REDIS_URL") or "redis://127.0.0.1:6379/0"
    shared_kafka = os.environ.get("OTA_KAFKA_BOOTSTRAP") or "127.0.0.1:9092"
    mqtt = {k: v for k, v in os.environ.items() if k.startswith("OTA_MQTT_")}
    broker_counts: dict[str, float] = {}
    credentials = os.environ.get("OTA_CREDENTIALS_REDIS_URL") or redis_url_with_db(base_redis, 1)
    with tempfile.TemporaryDirectory(prefix=f"{args.part}-restart-") as tmp:
        part: PrivateKafka | PrivateRedis | FlushedRedis | RestartableBroker | KafkaCluster
        extra: dict[str, str] = {}
        on_cluster = args.part == "kafka-leader"
        if on_cluster:
            part = KafkaCluster(cluster_root() / f"bench-{os.urandom(3).hex()}")
            kafka, redis_url, redis_db = part.bootstrap, base_redis, REDIS_DB
        elif args.part == "kafka":
            part = PrivateKafka(Path(tmp) / "kafka", partitions=args.partitions)
            kafka, redis_url, redis_db = part.bootstrap, base_redis, REDIS_DB
        elif args.part in ("redis", "redis-flush"):
            node = PrivateRedis(Path(tmp) / "redis", extra=AOF_EVERYSEC)
            part = node if args.part == "redis" else FlushedRedis(node)
            node.start()
            kafka, redis_url, redis_db = shared_kafka, node.url(), 0
            extra = {"OTA_CREDENTIALS_REDIS_URL": credentials}
        else:
            part = RestartableBroker(
                broker_lib(),
                Path(tmp) / "broker",
                heap=BROKER_HEAP,
                OTA_BROKER_AUTH_MODE="redis",
                OTA_BROKER_REDIS_URL=credentials,  # where the API writes the fleet's secrets
                **_broker_settings(args),
            )
            kafka, redis_url, redis_db = shared_kafka, base_redis, REDIS_DB
        if not isinstance(part, PrivateRedis | FlushedRedis):
            part.start()
        if isinstance(part, RestartableBroker):
            broker = part.current
            mqtt = {
                "OTA_MQTT_HOST": "127.0.0.1",
                "OTA_MQTT_PORT": str(broker.plain_port),
                "OTA_MQTT_TLS_PORT": str(broker.tls_port),
                "OTA_MQTT_PLATFORM_PORT": str(broker.platform_port),
                "OTA_MQTT_PLATFORM_USER": broker.platform_user,
                "OTA_MQTT_PLATFORM_PASSWORD": broker.platform_password,
                "OTA_BROKER_CA": str(broker.ca_file),
                "OTA_CREDENTIALS_REDIS_URL": credentials,
            }
        try:
            with running_stack(
                f"bench-{args.part[0]}r",
                kafka_bootstrap=kafka,
                redis_url=redis_url,
                redis_db=redis_db,
                state_dir=Path(tmp) / "stack",
                partitions=args.partitions,
                extra={**mqtt, **extra, "OTA_LOG_LEVEL": "WARNING"},
                replicas=REPLICAS if on_cluster else 1,
                min_insync_replicas=MIN_INSYNC_REPLICAS if on_cluster else None,
            ) as stack:
                fault: (
                    PrivateKafka | PrivateRedis | FlushedRedis | RestartableBroker | InboxLeaderKill
                )
                if isinstance(part, KafkaCluster):
                    fault = InboxLeaderKill(part, stack.plan.topic_prefix + "ota.inbox")
                else:
                    fault = part
                started = time.monotonic()
                outcome = await rollout_across_restart(
                    fault,
                    stack.plan,
                    stack.env,
                    kafka_bootstrap=kafka,
                    size=args.size,
                    rate_per_min=args.rate_per_min,
                    kill_after_share=args.kill_at,
                    outage_s=0.0
                    if isinstance(fault, InboxLeaderKill | FlushedRedis)
                    else args.outage_s,
                    timeout_s=args.timeout_s,
                    fleet_processes=args.fleet_processes,
                    fleet_mode=args.mode,
                    mux_connections=args.mux_connections,
                    timelines_of=5,
                )
            if isinstance(part, RestartableBroker):
                broker_counts = _connect_counts(part.current.metrics())
        finally:
            part.stop()
            if args.keep_logs is not None:
                shutil.copytree(Path(tmp) / "stack", args.keep_logs, dirs_exist_ok=True)
    result = figures(args, outcome, started)
    if args.part == "broker":
        result["restarted_broker_connects"] = broker_counts
    if isinstance(fault, InboxLeaderKill):
        result |= _failover_figures(fault, outcome)
        shutil.rmtree(fault.cluster.directory, ignore_errors=True)  # kept if the run failed
    return result


def _failover_figures(fault: InboxLeaderKill, outcome: RestartRun) -> dict[str, Any]:
    """A leader kill has no restart: its pause counts from the kill."""
    name = "faults.kafka_leader_kill"
    after_failover = outcome.resume_s()
    failover = outcome.answered_at - outcome.killed_at
    return {
        "outage_s": 0.0,  # the node stays dead; the pause is the failover
        "killed_node": fault.leader,
        "killed_node_was_controller": fault.was_controller,
        "failover_s": round(failover, 1),
        f"{name}_resume_s": None if after_failover is None else round(failover + after_failover, 1),
        "resume_after_failover_s": None if after_failover is None else round(after_failover, 1),
    }


def _connect_counts(metrics: str) -> dict[str, float]:
    """The restarted broker's CONNECT outcomes by result and reason (its /metrics)."""
    prefix = "ota_broker_connects_total{"
    return {
        line[len(prefix) : line.rindex("}")]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(prefix)
    }


def figures(args: argparse.Namespace, outcome: RestartRun, started: float) -> dict[str, Any]:
    first = outcome.samples[0][0] if outcome.samples else started
    done = [t for t, n in outcome.samples if n >= args.size]
    wall = (done[0] if done else outcome.samples[-1][0]) - first
    resume = outcome.resume_s()
    at_kill = max((n for t, n in outcome.samples if t <= outcome.killed_at), default=0)
    if not outcome.killed_at or at_kill >= args.size:
        raise SystemExit("the rollout finished before the kill: use a larger --size")
    name = NAMES.get(args.part, f"faults.{args.part}_restart")
    resume_name = "faults.flushall_rebuild_s" if args.part == "redis-flush" else f"{name}_resume_s"
    return {
        "part": args.part,
        "size": args.size,
        "outage_s": 0.0 if args.part in ("redis-flush", "kafka-leader") else args.outage_s,
        "status": outcome.task.get("status"),
        "succeeded": outcome.succeeded,
        "dead_s": round(outcome.answered_at - outcome.killed_at, 1),
        "rate_before_kill": round(outcome.rate_before_kill(), 1),
        resume_name: None if resume is None else round(resume, 1),
        f"{name}_timeouts": len(outcome.held_up),
        f"{name}_duplicate_commands": outcome.repeats.commands_new_id,
        f"{name}_repeated_commands_same_id": outcome.repeats.commands_same_id,
        f"{name}_duplicate_webhooks": outcome.webhooks.new_id,
        f"{name}_repeated_webhooks_same_id": outcome.webhooks.same_id,
        f"{name}_webhooks_missing": outcome.webhook_missing,
        f"{name}_repeated_transitions": outcome.repeats.transitions,
        "finished_at_kill": at_kill,
        "killed_at_s": round(outcome.killed_at - first, 1),
        "answered_at_s": round(outcome.answered_at - first, 1),
        "wall_s": round(wall, 1),
        "devices_per_s": round(outcome.succeeded / wall, 1) if wall > 0 else 0.0,
        "transitions": outcome.transitions,
        "held_up_states": outcome.held_up_states(),
        "held_up": dict(list(outcome.held_up.items())[:20]),
        "held_up_timelines": outcome.timelines,
        "progress": _every_second(outcome.samples, first),
    }


def _every_second(samples: list[tuple[float, int]], first: float) -> list[tuple[float, int]]:
    """(seconds since the task was created, devices finished), one sample a second."""
    kept: list[tuple[float, int]] = []
    for t, n in samples:
        if not kept or t - first >= kept[-1][0] + 1.0:
            kept.append((round(t - first, 1), n))
    return kept


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.part}_restart-{args.size}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "Success" else 1


if __name__ == "__main__":
    sys.exit(main())
