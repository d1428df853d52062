"""The worker's settings, read once from OTA_WORKER_* (and the common OTA_*) variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ota.broker_outage import KEY_LIFE_MS
from ota.dev_secrets import refuse_development_secrets
from ota.kafka_clients import STATIC_MEMBER_ID
from ota.settings import CommonSettings, Env, SettingsError

# A hold the gateway's record of the outage outlives (it expires KEY_LIFE_MS after it).
BROKER_HOLD_MAX_MS = KEY_LIFE_MS // 3


@dataclass(frozen=True)
class WorkerSettings:
    common: CommonSettings
    group_id: str = "ota-workers"
    retention_s: int = 7 * 24 * 3600  # finished jobs (and idle devices) expire after this
    max_poll_records: int = 2000
    # How long an idle poll waits (records end it at once): the loop's idle wake-ups
    # (outbox drops, commits, the stop check) are its only cost.
    poll_timeout_ms: int = 1000
    sweep_batch: int = 1000  # deadlines popped per Lua call
    sweep_idle_ms: int = 200  # longest sleep between sweeps when nothing is due sooner
    sweep_lease_ms: int = 30_000  # a popped deadline fires again if its timeout was not sent
    # After a Kafka outage, deadlines from its start on come due later by its length plus
    # this grace (held-up reports reach the log first), for `outage_memory_ms` after it.
    outage_grace_ms: int = 10_000
    outage_memory_ms: int = 900_000
    # After a device broker outage: how long, from the broker's return, deadlines of
    # devices it disconnected are held while they reconnect (0: not held).
    broker_hold_ms: int = 600_000
    drain_timeout_s: float = 10.0
    # How soon the group notices a killed worker; long enough that a CPU-starved but live
    # worker keeps its partitions.
    session_timeout_ms: int = 30_000
    # Static group membership: a worker restarted under the same id takes its partitions
    # straight back, without waiting out the session of the process it replaces. Empty:
    # a dynamic member, which also hands its partitions over at once on a graceful stop
    # (a static member keeps them for session_timeout_ms, expecting to come back).
    instance_id: str = ""
    metrics_port: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = Env(environ)
        common = CommonSettings.from_env(environ)
        # Workers sign download tokens: a published key is refused beyond loopback.
        refuse_development_secrets(
            common.dev_mode, [common.metrics_host], [common.token_keys_use()]
        )
        instance_id = env.text("WORKER_INSTANCE_ID", "")
        if instance_id and not STATIC_MEMBER_ID.fullmatch(instance_id):
            raise SettingsError(
                f"OTA_WORKER_INSTANCE_ID={instance_id!r}: 1-249 of A-Z a-z 0-9 . _ -"
            )
        return cls(
            common=common,
            instance_id=instance_id,
            group_id=env.text("WORKER_GROUP_ID", "ota-workers"),
            retention_s=env.integer("WORKER_RETENTION_S", 7 * 24 * 3600, min_value=1),
            max_poll_records=env.integer(
                "WORKER_MAX_POLL_RECORDS", 2000, min_value=1, max_value=100_000
            ),
            poll_timeout_ms=env.integer("WORKER_POLL_TIMEOUT_MS", 1000, min_value=1),
            sweep_batch=env.integer("WORKER_SWEEP_BATCH", 1000, min_value=1, max_value=5000),
            sweep_idle_ms=env.integer("WORKER_SWEEP_IDLE_MS", 200, min_value=1),
            sweep_lease_ms=env.integer("WORKER_SWEEP_LEASE_MS", 30_000, min_value=100),
            outage_grace_ms=env.integer("WORKER_OUTAGE_GRACE_MS", 10_000, min_value=0),
            outage_memory_ms=env.integer("WORKER_OUTAGE_MEMORY_MS", 900_000, min_value=0),
            broker_hold_ms=env.integer(
                "WORKER_BROKER_HOLD_MS", 600_000, min_value=0, max_value=BROKER_HOLD_MAX_MS
            ),
            drain_timeout_s=env.number("WORKER_DRAIN_TIMEOUT_S", 10.0, min_value=0.1),
            session_timeout_ms=env.integer(
                "WORKER_SESSION_TIMEOUT_MS", 30_000, min_value=1000, max_value=300_000
            ),
            metrics_port=env.integer("WORKER_METRICS_PORT", 0, min_value=0, max_value=65535),
        )
