"""Kafka client factories with the settings every service shares.

Producers are idempotent with acks=all (nothing acknowledged is lost, retries do not
duplicate); consumers never auto-commit (services commit after their own write).
TLS and SASL come from the common settings (ota/client_security.py).
Producers run on the client OTA_KAFKA_CLIENT names (ota/kafka_producer.py); consumers and
the admin client are kafka-python's. Callers pass overrides for tuning; kafka-python's
metrics are off because the services export their own through Prometheus. Consumers are
`GroupConsumer`s, which finish a group join that kafka-python would otherwise leave half
done and stamp a liveness beat after every poll (ota/health.py), so a consumer thread that
stops polling fails /livez.

Kafka restarts are a pause, not a loss (docs/operations.md, "Kafka outages"): every
client reconnects within `RECONNECT_BACKOFF_MAX_MS` of Kafka answering again (kafka-python
backs off up to 30 s by default, which held a whole rollout for half a minute after the
broker was back), and a producer keeps retrying a record for `DELIVERY_TIMEOUT_MS`, so an
outage shorter than that fails nothing: what was sent waits in the producer and flows,
in order and once, as soon as Kafka answers. Past it the record fails and the caller's own
retry takes over (the gateway's ordered re-produce, the workers' and the edge's outboxes,
the scheduler's patient sends).
"""

from __future__ import annotations

import logging
import re
import uuid
from functools import partial
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import MemberToRemove
from kafka.errors import KafkaError

from ota.health import HEALTH, Beat
from ota.kafka_consumer import ConfluentConsumer, RecordConsumer
from ota.kafka_errors import log_client_error, translate
from ota.kafka_producer import (
    ConfluentProducer,
    KafkaPythonProducer,
    KeyHashPartitioner,
    RecordProducer,
)
from ota.kafka_sockets import close_failed_sockets
from ota.settings import CommonSettings

log = logging.getLogger(__name__)

# kafka-python leaves a socket open per failed connection attempt (one a second per client
# while Kafka is down): from here on, for every kafka-python client of the process, closed.
close_failed_sockets()

# kafka-python 3.0.12 defaults in brackets.
DELIVERY_TIMEOUT_MS = 300_000  # [120 s] a record is retried this long before it fails
REQUEST_TIMEOUT_MS = 15_000  # [30 s] a broker gone without a reset is noticed this soon
RECONNECT_BACKOFF_MS = 50  # [50 ms] first wait before reconnecting, doubled each time
RECONNECT_BACKOFF_MAX_MS = 1_000  # [30 s] the longest wait: back within 1 s of Kafka
RESILIENCE: dict[str, Any] = {
    "reconnect_backoff_ms": RECONNECT_BACKOFF_MS,
    "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
}


def make_producer(
    settings: CommonSettings,
    *,
    client_id: str = "ota",
    linger_ms: int = 5,
    max_block_ms: int = 60_000,
) -> RecordProducer:
    """The services' producer on the client OTA_KAFKA_CLIENT names. `max_block_ms` bounds
    how long a send waits for topic metadata (kafka-python) or room in the queue
    (confluent-kafka) before it fails."""
    if settings.kafka_client == "confluent-kafka":
        return _confluent_producer(settings, client_id, linger_ms, max_block_ms)
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": linger_ms,
        "max_block_ms": max_block_ms,
        "batch_size": 256 * 1024,
        # Idempotence keeps a partition's order across retries with up to 5 in flight.
        "max_in_flight_requests_per_connection": 5,
        "retries": 2**31 - 1,  # bounded by the delivery timeout, not by a count
        "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        "partitioner": KeyHashPartitioner(),
        **RESILIENCE,
        "metrics_enabled": False,
        **settings.kafka_security.client_config(),
    }
    try:
        return KafkaPythonProducer(KafkaProducer(**config))
    except KafkaError as exc:  # no broker answered the bootstrap
        raise translate(exc) from exc


def _confluent_producer(
    settings: CommonSettings, client_id: str, linger_ms: int, max_block_ms: int
) -> RecordProducer:
    from confluent_kafka import Producer  # only where chosen: librdkafka starts threads

    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": linger_ms,
        "max.in.flight.requests.per.connection": 5,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        "request.timeout.ms": REQUEST_TIMEOUT_MS,
        "reconnect.backoff.ms": RECONNECT_BACKOFF_MS,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        # Kafka's Java default (and kafka-python's): a key lands where the other clients
        # and the workers' own partition arithmetic put it.
        "partitioner": "murmur2_random",
        "error_cb": log_client_error,
        "logger": logging.getLogger("librdkafka"),
        **settings.kafka_security.librdkafka_config(),
    }
    return ConfluentProducer(Producer(config), queue_full_timeout_s=max_block_ms / 1000)


class GroupConsumer(KafkaConsumer):  # type: ignore[misc]
    """A KafkaConsumer whose poll() never leaves a join of its group half done.

    kafka-python 3.0.12: when the group leader rejoins because topic metadata changed, the
    JoinGroup/SyncGroup round trip runs as a task that only a poll() applies. If that poll's
    timeout ends first (a short poll, a loaded machine), the task itself has already updated
    the metadata snapshot, so the next poll sees no reason to rejoin and never applies the
    finished join: the member stays "rebalancing" with heartbeats off, the broker drops it
    after session_timeout_ms, commits fail, and it never joins again while the process runs.
    Asking for a rejoin then makes the next poll complete the join (or join anew).

    Every poll that returns, empty or not, stamps the consumer's beat ("kafka-poll
    <group>"), registered here (unready until the first poll) and retired on close. A
    subscribed consumer also stamps its group's membership beat after a poll while it is a
    settled member: its coordinator known and its member state stable (not unjoined, not
    rebalancing); a consumer given partitions by hand has none.
    """

    def __init__(self, *topics: str, **configs: Any) -> None:
        super().__init__(*topics, **configs)
        self.max_poll_records: int = configs.get("max_poll_records", 500)
        self._beat: Beat = HEALTH.beat(f"kafka-poll {configs.get('group_id')}")
        self._membership: Beat | None = None  # registered at the first subscribed poll

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None, update_offsets: bool = True
    ) -> dict[Any, list[Any]]:
        records: dict[Any, list[Any]] = super().poll(
            timeout_ms=timeout_ms, max_records=max_records, update_offsets=update_offsets
        )
        coordinator = self._coordinator
        if coordinator.rebalance_in_progress() and not coordinator.need_rejoin():
            coordinator.request_rejoin()
        self._beat()
        group = self.config["group_id"]
        if group is not None and self._subscription.partitions_auto_assigned():
            if self._membership is None:
                self._membership = HEALTH.membership(str(group))
            if coordinator.coordinator_id is not None and coordinator.stable():
                self._membership()
        return records

    def assign_at(self, starts: dict[TopicPartition, int]) -> None:
        """Take these partitions by hand, each read from its offset."""
        self.assign(list(starts))
        for tp, offset in starts.items():
            self.seek(tp, offset)

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        """Closing leaves the group, for a static member (group_instance_id) too.

        A static member that dies comes back under its id and takes its partitions straight
        back; kafka-python 3.0.12 also makes a static member skip the LeaveGroup on close, so
        a member stopped on purpose (scaled down, its stack stopped) would hold its
        partitions for session_timeout_ms. Without the id, close sends the LeaveGroup by
        member id, which Kafka accepts for a static member as well.
        """
        HEALTH.retire(self._beat)
        if self._membership is not None:
            HEALTH.retire(self._membership)
        self._coordinator.config["group_instance_id"] = None
        super().close(autocommit=autocommit, timeout_ms=timeout_ms)


# Kafka's rule for a group.instance.id (static membership): a topic name's characters.
STATIC_MEMBER_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def make_consumer(
    settings: CommonSettings,
    *,
    group_id: str | None,
    client_id: str = "ota",
    max_poll_records: int = 2000,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
    group_instance_id: str | None = None,
    fetch_max_bytes: int = 50 * 1024 * 1024,
    max_partition_fetch_bytes: int = 1024 * 1024,
    metadata_max_age_ms: int = 300_000,
    max_poll_interval_ms: int = 300_000,
) -> RecordConsumer:
    """The services' consumer on the client OTA_KAFKA_CLIENT names: no auto-commit, from
    the earliest offset when the group has none, committed records only."""
    if settings.kafka_client == "confluent-kafka":
        config: dict[str, Any] = {
            "bootstrap.servers": settings.kafka_bootstrap,
            "client.id": client_id,
            # librdkafka wants a group even for a consumer that only assigns (rebuilds);
            # one that never subscribes or commits never joins it.
            "group.id": group_id or f"ota-unjoined-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": heartbeat_interval_ms,
            "fetch.max.bytes": fetch_max_bytes,
            "max.partition.fetch.bytes": max_partition_fetch_bytes,
            "topic.metadata.refresh.interval.ms": metadata_max_age_ms,
            "max.poll.interval.ms": max_poll_interval_ms,
            "reconnect.backoff.ms": RECONNECT_BACKOFF_MS,
            "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            "on_commit": _log_commit_failure,
            "logger": logging.getLogger("librdkafka"),
            **settings.kafka_security.librdkafka_config(),
        }
        if group_instance_id:
            config["group.instance.id"] = group_instance_id
        leave = None
        if group_id and group_instance_id:
            leave = partial(_remove_static_member, settings, group_id, group_instance_id)
        return ConfluentConsumer(
            config, max_poll_records=max_poll_records, group_id=group_id, leave=leave
        )
    return GroupConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
        isolation_level="read_committed",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        group_instance_id=group_instance_id,
        fetch_max_bytes=fetch_max_bytes,
        max_partition_fetch_bytes=max_partition_fetch_bytes,
        metadata_max_age_ms=metadata_max_age_ms,
        max_poll_interval_ms=max_poll_interval_ms,
        **RESILIENCE,
        metrics_enabled=False,
        **settings.kafka_security.client_config(),
    )


def _log_commit_failure(error: Any, partitions: Any) -> None:
    # An asynchronous commit Kafka refused: the next one (within a second) covers it.
    if error is not None and error.name() != "_NO_OFFSET":
        log.warning("kafka commit failed", extra={"error": error.str(), "code": error.name()})


def _remove_static_member(settings: CommonSettings, group_id: str, instance_id: str) -> None:
    """Take a closed static member out of its group: librdkafka's close does not (Kafka's
    static membership), so a member stopped on purpose would hold its partitions for
    session_timeout_ms. A member that dies keeps them, and takes them back on return."""
    admin = make_admin(settings)
    try:
        admin.remove_group_members(group_id, [MemberToRemove(group_instance_id=instance_id)])
    except KafkaError as exc:  # already gone (session over), or Kafka away: it times out
        log.info("static member not removed", extra={"group": group_id, "error": str(exc)})
    finally:
        admin.close()


def make_admin(settings: CommonSettings, **overrides: Any) -> KafkaAdminClient:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": "ota-admin",
        **RESILIENCE,
        **settings.kafka_security.client_config(),
    }
    config.update(overrides)
    return KafkaAdminClient(**config)
