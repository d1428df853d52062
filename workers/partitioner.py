"""Kafka's default partitioning of keyed records (murmur2 of the key modulo the topic's
partition count), with each key's hash computed once: a worker sends several records per
device (job events, commands) and kafka-python's partitioner is pure Python."""

from __future__ import annotations

from typing import Any

from kafka.partitioner import DefaultPartitioner
from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import murmur2

_HASHES_MAX = 200_000


class KeyHashPartitioner(Partitioner):  # type: ignore[misc]
    def __init__(self) -> None:
        self._fallback = DefaultPartitioner()
        self._hashes: dict[bytes, int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            result: int = self._fallback.partition(
                topic, key, serialized_key, value, serialized_value, cluster
            )
            return result
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= _HASHES_MAX:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        # Kafka numbers a topic's partitions 0..n-1: the default partitioner's
        # sorted(partitions)[hash % n] is hash % n.
        return hashed % len(partitions)
