"""Create the platform's Kafka topics; topics that already exist are left as they are.

Usage: .venv/bin/python deploy/local/create_topics.py --bootstrap 127.0.0.1:9092 \
           --partitions 12 [--prefix test-] [--replication-factor 3 --min-insync-replicas 2]
The topics and their settings come from deploy/topics.toml (the one table of topics; see
deploy/topics.py): event topics keep 7 days, control-plane topics are compacted. One
replica each by default (the local one-node Kafka); a cluster's test runs ask for more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

# deploy/topics.py reads deploy/topics.toml; this script runs as a file, not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import topics

TABLE = topics.load()
TOPICS: dict[str, dict[str, str]] = {t.name: t.config() for t in TABLE.topics}

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


def create_topics(
    admin: KafkaAdminClient,
    prefix: str,
    partitions: int,
    replicas: int = 1,
    min_insync_replicas: int | None = None,
) -> list[str]:
    """Creates missing topics; returns lines saying what was created (or that all exist)."""
    insync = (
        {} if min_insync_replicas is None else {"min.insync.replicas": str(min_insync_replicas)}
    )
    request = {
        prefix + name: {
            "num_partitions": partitions,
            "replication_factor": replicas,
            "configs": {**config, **insync},
        }
        for name, config in TOPICS.items()
    }
    result = admin.create_topics(request, timeout_ms=30_000, raise_errors=False)
    created: list[str] = []
    failures: list[str] = []
    for topic in result["topics"]:
        name, code = topic["name"], topic["error_code"]
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:
            failures.append(f"{name}: error {code} {topic.get('error_message') or ''}".strip())
    if failures:
        raise RuntimeError("could not create topics: " + "; ".join(failures))
    admin.wait_for_topics(created, timeout_ms=30_000)
    if not created:
        return [f"all {len(request)} exist ({prefix}ota.*)"]
    return [f"created {name} ({partitions} partitions, {replicas} replicas)" for name in created]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--partitions", type=int, default=TABLE.development.partitions)
    parser.add_argument("--prefix", default="", help="prepended as-is to every topic name")
    parser.add_argument("--replication-factor", type=int, default=1, help="replicas per partition")
    parser.add_argument(
        "--min-insync-replicas", type=int, default=None, help="topic setting (broker's default)"
    )
    args = parser.parse_args()
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    if args.replication_factor < 1:
        parser.error("--replication-factor must be at least 1")
    insync = args.min_insync_replicas
    if insync is not None and not 1 <= insync <= args.replication_factor:
        parser.error("--min-insync-replicas must be between 1 and --replication-factor")

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id="ota-create-topics")
    try:
        lines = create_topics(admin, args.prefix, args.partitions, args.replication_factor, insync)
        for line in lines:
            print(f"topics:    {line}")
    except (KafkaError, RuntimeError) as exc:
        print(f"topics: {exc}", file=sys.stderr)
        return 1
    finally:
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
