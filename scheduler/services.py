"""Wiring: one object holding the scheduler's services, built from settings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import redis.asyncio
from redis.asyncio import Redis as AsyncRedis

from ota.object_store import ObjectStore
from ota.redis_clients import make_async_redis
from scheduler.apikeys import ApiKeys
from scheduler.audit import AuditLog
from scheduler.blobs import Blobs, BlobStore
from scheduler.bus import Producer, absent_topics
from scheduler.credential_log import CredentialLog
from scheduler.credentials import (
    Credentials,
    RevokeHook,
    announce_revocation,
    count_revocation,
)
from scheduler.devices import Registry
from scheduler.joins import Joins
from scheduler.notify import Notifier
from scheduler.object_blobs import ObjectBlobStore
from scheduler.packages import Packages
from scheduler.rollbacks import Rollbacks
from scheduler.secretbox import WEBHOOK_SECRETS, SecretBox
from scheduler.settings import SchedulerSettings
from scheduler.shared_budget import SharedFailureBudget
from scheduler.signing import load_public_keys
from scheduler.tasks import Tasks
from scheduler.taskstate import TaskState
from scheduler.webhooks import Webhooks

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: SchedulerSettings
    redis: redis.asyncio.Redis[bytes]
    producer: Producer
    blobs: Blobs
    packages: Packages
    registry: Registry
    state: TaskState
    notifier: Notifier
    tasks: Tasks
    webhooks: Webhooks
    wake: asyncio.Event
    credentials: Credentials
    credential_log: CredentialLog  # the credentials topic: records changes, restores the store
    # Awaited with (device id, "rotated" | "disabled" | "deleted") after Redis has the
    # change: counted, and announced on the channel the device broker listens to, which
    # disconnects the device's live sessions.
    on_revoked: list[RevokeHook]
    credentials_redis: AsyncRedis[bytes]  # `redis` unless configured apart
    audit: AuditLog
    api_keys: ApiKeys  # who a bearer token is: configured and stored keys

    @classmethod
    def build(cls, settings: SchedulerSettings) -> Services:
        common = settings.common
        r = make_async_redis(common, common.redis_url)
        producer = Producer(common)
        blobs: Blobs = (
            BlobStore(settings.package_dir)
            if settings.package_store is None
            else ObjectBlobStore(ObjectStore(settings.package_store), settings.package_dir / "tmp")
        )
        signing_keys = (
            load_public_keys(settings.signing_key_path) if settings.signing_key_path else {}
        )
        packages = Packages(
            r,
            producer,
            common.topics,
            blobs,
            public_keys=signing_keys,
            require_signature=settings.require_signature,
            max_bytes=settings.package_max_bytes,
        )
        joins = Joins(r)
        registry = Registry(
            r,
            producer,
            common.topics,
            settings.timeline_cap,
            settings.timeline_retention_ms,
            on_labels=joins.changed,
            on_facts=joins.facts_changed,
        )
        state = TaskState(r)
        notifier = Notifier(producer, common.topics)
        wake = asyncio.Event()
        tasks = Tasks(r, producer, common.topics, packages, registry, state, notifier, wake)
        if settings.credential_dev_key:
            log.warning(
                "device secrets are sealed with the public development key: "
                "set OTA_CREDENTIAL_KEYS outside development"
            )
        cred_r = r
        if settings.credentials_redis_url != common.redis_url:
            cred_r = make_async_redis(common, settings.credentials_redis_url)
        on_revoked: list[RevokeHook] = [count_revocation, announce_revocation(cred_r)]
        absent = absent_topics(common, (common.topics.audit, common.topics.credentials))
        recording = common.topics.credentials not in absent
        credential_log = CredentialLog(cred_r, producer, common, recording=recording)
        credentials = Credentials(
            cred_r, SecretBox(settings.credential_keys), on_revoked, credential_log.publish
        )
        return cls(
            settings,
            r,
            producer,
            blobs,
            packages,
            registry,
            state,
            notifier,
            tasks,
            Webhooks(
                r,
                producer,
                common.topics.webhooks,
                SecretBox(settings.credential_keys, WEBHOOK_SECRETS),
            ),
            wake,
            credentials,
            credential_log,
            on_revoked,
            cred_r,
            AuditLog(
                r,
                producer,
                common.topics.audit,
                to_kafka=common.topics.audit not in absent,
                budget=SharedFailureBudget(
                    r, settings.audit_failures_burst, settings.audit_failures_per_min
                ),
            ),
            ApiKeys(r, producer, common.topics.api_keys, settings.api_keys),
        )

    @property
    def rollbacks(self) -> Rollbacks:
        return Rollbacks(
            self.redis, self.tasks, self.producer, self.settings.common.topics, self.wake
        )

    async def close(self) -> None:
        self.blobs.close()
        await self.producer.close()
        await self.redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
        if self.credentials_redis is not self.redis:
            await self.credentials_redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
