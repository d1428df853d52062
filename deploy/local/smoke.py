"""Smoke check of the local stack: Kafka round trip through a consumer group, then Redis.

Produces one record (idempotent, acks=all) to a scratch topic, reads it back with a
consumer group and a manual commit, stores it in Redis with a Lua script, prints what
happened, and deletes the scratch topic and key. Exit status 0 when all of it worked.

Usage: .venv/bin/python deploy/local/smoke.py   (addresses from OTA_KAFKA_BOOTSTRAP /
OTA_REDIS_URL, defaulting to the local stack's ports)
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

TIMEOUT_S = 30.0

# KEYS[1] = key to write; ARGV[1] = value. Stores the value only if the key is new and
# returns the stored value, so a second run with the same key would change nothing.
STORE_ONCE = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 60)
return redis.call('GET', KEYS[1])
"""


def setting(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def kafka_round_trip(bootstrap: str, topic: str, value: bytes) -> tuple[int, int]:
    """Returns (partition, offset) of the record after the group read and committed it."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        producer.send(topic, key=b"smoke", value=value).get(timeout=TIMEOUT_S)
    finally:
        producer.close(timeout=TIMEOUT_S)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"ota-smoke-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.value == value:
                        consumer.commit()
                        return record.partition, record.offset
        raise TimeoutError(f"the record did not come back from {topic} in {TIMEOUT_S:g}s")
    finally:
        consumer.close()


def main() -> int:
    bootstrap = setting("OTA_KAFKA_BOOTSTRAP", f"127.0.0.1:{setting('OTA_KAFKA_PORT', '9092')}")
    redis_url = setting("OTA_REDIS_URL", f"redis://127.0.0.1:{setting('OTA_REDIS_PORT', '6379')}/0")
    run = uuid.uuid4().hex[:8]
    topic, key, value = f"ota.smoke.{run}", f"ota:smoke:{run}", f"hello from smoke {run}"

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="ota-smoke")
    try:
        admin.create_topics(
            {topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True
        )
        partition, offset = kafka_round_trip(bootstrap, topic, value.encode())
        print(f"kafka: produced and consumed {value!r} on {topic}[{partition}]@{offset}")
        with redis.Redis.from_url(redis_url) as client:
            stored: Any = client.execute_command("EVAL", STORE_ONCE, 1, key, value)
            client.delete(key)
        print(f"redis: Lua script stored {stored.decode()!r} under {key}")
    except (KafkaError, redis.RedisError, OSError, TimeoutError) as exc:
        print(f"smoke check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(KafkaError):
            admin.delete_topics([topic])
        admin.close()
    print("smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
