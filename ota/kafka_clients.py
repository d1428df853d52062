"""Kafka client factories with the settings every service shares.

Producers are idempotent with acks=all (nothing acknowledged is lost, retries do not
duplicate); consumers never auto-commit (services commit after their own write).
Callers pass overrides for tuning; kafka-python's metrics are off because the
services export their own through Prometheus. Consumers are `GroupConsumer`s, which
finish a group join that kafka-python would otherwise leave half done. `WakeupHold`
gives a burst of sends one wake-up of the producer's sender thread instead of one per
new batch.
"""

from __future__ import annotations

import threading
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from ota.settings import CommonSettings


def make_producer(
    settings: CommonSettings, *, client_id: str = "ota", **overrides: Any
) -> KafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,
        "metrics_enabled": False,
    }
    config.update(overrides)
    return KafkaProducer(**config)


class WakeupHold:
    """Between `hold()` and `release()`, the holding thread's sends do not wake the
    producer's sender thread; `release()` wakes it once if any of them asked to (a flush
    or a wait for metadata wakes it at once, held or not).

    kafka-python 3.0.12 wakes the sender (a socket write, then a pass of the sender
    thread competing for the GIL) on every send that starts a new batch, which is most
    of them when a burst spreads a few records over many partitions. A wake-up only makes
    the sender look at the new batches sooner, and a batch is not sent before linger_ms
    anyway: a release within the linger of the first held send delays no record. Other
    threads' wake-ups (close, another sender of the same producer) go through at once.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self._sender = producer._sender
        self._metadata = producer._metadata
        self._accumulator = producer._accumulator
        self._holder: int | None = None
        self._wanted = False

    def hold(self) -> None:
        self._holder = threading.get_ident()
        self._sender.wakeup = self._note  # shadows the method on this instance only

    def release(self) -> None:
        del self._sender.wakeup
        self._holder = None
        if self._wanted:
            self._wanted = False
            self._sender.wakeup()

    def _note(self) -> None:
        if (
            threading.get_ident() == self._holder
            and not self._metadata.need_update
            and not self._accumulator.flush_in_progress()
        ):
            self._wanted = True
        else:
            type(self._sender).wakeup(self._sender)


class GroupConsumer(KafkaConsumer):  # type: ignore[misc]
    """A KafkaConsumer whose poll() never leaves a join of its group half done.

    kafka-python 3.0.12: when the group leader rejoins because topic metadata changed, the
    JoinGroup/SyncGroup round trip runs as a task that only a poll() applies. If that poll's
    timeout ends first (a short poll, a loaded machine), the task itself has already updated
    the metadata snapshot, so the next poll sees no reason to rejoin and never applies the
    finished join: the member stays "rebalancing" with heartbeats off, the broker drops it
    after session_timeout_ms, commits fail, and it never joins again while the process runs.
    Asking for a rejoin then makes the next poll complete the join (or join anew).
    """

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None, update_offsets: bool = True
    ) -> dict[Any, list[Any]]:
        records: dict[Any, list[Any]] = super().poll(
            timeout_ms=timeout_ms, max_records=max_records, update_offsets=update_offsets
        )
        coordinator = self._coordinator
        if coordinator.rebalance_in_progress() and not coordinator.need_rejoin():
            coordinator.request_rejoin()
        return records


def make_consumer(
    settings: CommonSettings, *, group_id: str | None, client_id: str = "ota", **overrides: Any
) -> GroupConsumer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 2000,
        "isolation_level": "read_committed",
        "metrics_enabled": False,
    }
    config.update(overrides)
    return GroupConsumer(**config)


def make_admin(settings: CommonSettings, **overrides: Any) -> KafkaAdminClient:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": "ota-admin",
    }
    config.update(overrides)
    return KafkaAdminClient(**config)
