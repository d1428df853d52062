"""Kafka client factories with the settings every service shares.

Producers are idempotent with acks=all (nothing acknowledged is lost, retries do not
duplicate); consumers never auto-commit (services commit after their own write).
Callers pass overrides for tuning; kafka-python's metrics are off because the
services export their own through Prometheus.
"""

from __future__ import annotations

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


def make_consumer(
    settings: CommonSettings, *, group_id: str | None, client_id: str = "ota", **overrides: Any
) -> KafkaConsumer:
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
    return KafkaConsumer(**config)


def make_admin(settings: CommonSettings, **overrides: Any) -> KafkaAdminClient:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": "ota-admin",
    }
    config.update(overrides)
    return KafkaAdminClient(**config)
