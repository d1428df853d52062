"""The scheduler's settings, read once from OTA_ environment variables."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ota.dev_secrets import SecretUse, refuse_development_secrets
from ota.object_multipart import max_object_bytes
from ota.object_store import ObjectStoreSettings, package_store, store_secrets
from ota.settings import PREFIX, CommonSettings, Env, SettingsError
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"  # API keys, device credentials and device CAs; implies write
    BROKER = "broker"  # the device broker's authentication calls, and nothing else


def parse_api_keys(spec: str) -> dict[str, frozenset[Scope]]:
    """`key:read,key2:read+write,key3:broker,key4:admin` -> {key: scopes}; admin implies
    write, write implies read.

    A broker key carries no other scope: it sits in the broker's configuration, so it must
    not be able to read or change anything else."""
    keys: dict[str, frozenset[Scope]] = {}
    for item in spec.split(","):
        key, sep, scopes = item.strip().rpartition(":")
        if not sep or not key:
            raise SettingsError(f"{PREFIX}API_KEYS entry {item.strip()!r} is not key:scope[+scope]")
        if len(key) < 8:
            raise SettingsError(f"{PREFIX}API_KEYS has a key under 8 characters")
        try:
            parsed = {Scope(s.strip()) for s in scopes.split("+")}
        except ValueError:
            raise SettingsError(
                f"{PREFIX}API_KEYS scopes {scopes!r} are not read, write, read+write, admin or broker"
            ) from None
        if Scope.BROKER in parsed and len(parsed) > 1:
            raise SettingsError(f"{PREFIX}API_KEYS: a broker key may carry no other scope")
        if Scope.ADMIN in parsed:
            parsed.add(Scope.WRITE)
        if Scope.WRITE in parsed:
            parsed.add(Scope.READ)
        keys[key] = frozenset(parsed)
    return keys


# Development keys so the local stack works out of the box; production sets its own.
DEV_API_KEYS = (
    "dev-read-key:read,dev-write-key:read+write,dev-admin-key:admin,dev-broker-key:broker"
)


def development_secrets(
    settings: SchedulerSettings, api_keys_spec: str, credential_spec: str
) -> list[SecretUse]:
    """The scheduler's secrets, each marked development or placeholder (ota/dev_secrets.py)."""
    dev_api = parse_api_keys(DEV_API_KEYS)
    return [
        SecretUse.of(
            "API_KEYS", api_keys_spec, development=any(k in dev_api for k in settings.api_keys)
        ),
        settings.common.token_keys_use(),
        SecretUse.of(
            "CREDENTIAL_KEYS",
            credential_spec,
            development=settings.credential_dev_key,
        ),
        *store_secrets(settings.package_store),
    ]


def credential_keys(env: Env) -> tuple[CredentialKeys, bool]:
    """The device-secret keys and whether they are the development ones.

    Unset, the public development key is used only while the download-token keys are the
    development ones too (nothing configured: the local stack, tests, the demo); a
    deployment that configured its secrets must configure this one, or the scheduler
    refuses to start rather than seal device secrets under a published key."""
    spec = env.secret("CREDENTIAL_KEYS", "")
    if spec:
        keys = CredentialKeys.parse(spec)
        dev = CredentialKeys.parse(DEV_CREDENTIAL_KEYS).keys.values()
        return keys, any(key in dev for key in keys.keys.values())
    if env.is_set("TOKEN_KEYS"):
        raise SettingsError(
            f"{PREFIX}CREDENTIAL_KEYS is required once {PREFIX}TOKEN_KEYS is set: "
            "kid:base64key with a 32-byte key (head -c 32 /dev/urandom | base64)"
        )
    return CredentialKeys.parse(DEV_CREDENTIAL_KEYS), True


@dataclass(frozen=True)
class SchedulerSettings:
    common: CommonSettings
    http_host: str
    http_port: int
    api_keys: Mapping[str, frozenset[Scope]] = field(repr=False)
    package_dir: Path
    package_max_bytes: int
    signing_key_path: Path | None  # PEM public key (Ed25519 or ECDSA P-256)
    require_signature: bool
    reconcile_interval_s: float
    lease_ttl_s: float
    timeline_cap: int
    # How long a device's timeline stays in Redis after its newest entry (0: until trimmed
    # by the cap); the device hash keeps the last job, the log keeps every entry.
    timeline_retention_ms: int
    # How long a finished task keeps its per-device states and state indexes (0: as long
    # as the task); its document, counts and waves stay either way.
    task_devices_retention_ms: int
    # A running task rebuilt after Redis was lost sends the device results applied within
    # this long before the loss to the webhooks again (scheduler/task_rebuild.py).
    rebuild_renotify_ms: int
    webhook_attempts: int
    webhook_backoff_s: float
    webhook_timeout_s: float
    instance_id: str
    consumer_group: str
    credential_keys: CredentialKeys = field(repr=False)
    credential_dev_key: bool  # the public development key is in use
    # Device credentials are the platform's, not one deployment's: the device broker reads
    # them from here too (docs/broker.md), so every stack sharing a broker shares this.
    credentials_redis_url: str
    # OTA_PACKAGE_STORE=s3: the bucket holding package bytes (ota/object_store.py); None:
    # package_dir is the shared volume (with s3 it only spools uploads).
    package_store: ObjectStoreSettings | None = field(default=None, repr=False)
    # Refused unauthenticated attempts recorded one by one, by all replicas together
    # (scheduler/audit_budget.py, scheduler/shared_budget.py).
    audit_failures_burst: int = 100
    audit_failures_per_min: float = 60.0

    @property
    def registry_group(self) -> str:
        """The consumer group that applies the inbox to the device registry."""
        return f"{self.consumer_group}-registry"

    @property
    def jobs_group(self) -> str:
        """The consumer group that applies job events to tasks."""
        return f"{self.consumer_group}-jobs"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SchedulerSettings:
        env = Env(environ)
        key_path = env.text("PACKAGE_PUBLIC_KEY", "")
        cred_keys, cred_dev = credential_keys(env)
        common = CommonSettings.from_env(environ)
        own_redis = env.text("SCHEDULER_REDIS_URL", "")
        if own_redis:  # the workers and the edge may use a Redis Cluster; this must not
            checked = common.redis_security.check_url("SCHEDULER_REDIS_URL", own_redis)
            common = dataclasses.replace(common, redis_url=checked)
        api_keys_spec = env.secret("API_KEYS", DEV_API_KEYS)
        settings = cls(
            common=common,
            http_host=env.text("SCHEDULER_HOST", "127.0.0.1"),
            http_port=env.integer("SCHEDULER_PORT", 8080, min_value=0, max_value=65535),
            api_keys=parse_api_keys(api_keys_spec),
            package_dir=Path(env.text("PACKAGE_DIR", "var/packages")),
            package_max_bytes=env.integer(
                "PACKAGE_MAX_BYTES", 4 * 1024**3, min_value=1, max_value=2**40
            ),
            signing_key_path=Path(key_path) if key_path else None,
            require_signature=env.flag("PACKAGE_REQUIRE_SIGNATURE", False),
            reconcile_interval_s=env.number(
                "RECONCILE_INTERVAL_S", 2.0, min_value=0.05, max_value=60
            ),
            lease_ttl_s=env.number("LEASE_TTL_S", 15.0, min_value=1, max_value=600),
            timeline_cap=env.integer("TIMELINE_CAP", 32, min_value=1, max_value=10_000),
            timeline_retention_ms=1000
            * env.integer(
                "TIMELINE_RETENTION_S", 604_800, min_value=0, max_value=10 * 365 * 86_400
            ),
            task_devices_retention_ms=1000
            * env.integer(
                "TASK_DEVICES_RETENTION_S", 2_592_000, min_value=0, max_value=10 * 365 * 86_400
            ),
            rebuild_renotify_ms=1000
            * env.integer("REBUILD_RENOTIFY_S", 900, min_value=0, max_value=7 * 86_400),
            webhook_attempts=env.integer("WEBHOOK_ATTEMPTS", 8, min_value=1, max_value=50),
            webhook_backoff_s=env.number("WEBHOOK_BACKOFF_S", 1.0, min_value=0.01, max_value=600),
            webhook_timeout_s=env.number("WEBHOOK_TIMEOUT_S", 10.0, min_value=0.1, max_value=120),
            instance_id=env.text("INSTANCE_ID", "") or uuid.uuid4().hex[:12],
            consumer_group=env.text("SCHEDULER_GROUP", "ota-scheduler"),
            credential_keys=cred_keys,
            credential_dev_key=cred_dev,
            credentials_redis_url=common.redis_security.check_url(
                "CREDENTIALS_REDIS_URL",
                env.text("CREDENTIALS_REDIS_URL", "") or common.redis_url,
            ),
            package_store=package_store(env),
            audit_failures_burst=env.integer("AUDIT_FAILURES_BURST", 100, min_value=1),
            audit_failures_per_min=env.number(
                "AUDIT_FAILURES_PER_MIN", 60.0, min_value=0.1, max_value=60_000
            ),
        )
        refuse_development_secrets(
            common.dev_mode,
            [settings.http_host],
            development_secrets(settings, api_keys_spec, env.secret("CREDENTIAL_KEYS", "")),
        )
        if settings.require_signature and settings.signing_key_path is None:
            raise SettingsError(
                f"{PREFIX}PACKAGE_REQUIRE_SIGNATURE needs {PREFIX}PACKAGE_PUBLIC_KEY"
            )
        store = settings.package_store
        if store is not None and settings.package_max_bytes > max_object_bytes(store.part_bytes):
            raise SettingsError(
                f"{PREFIX}PACKAGE_MAX_BYTES={settings.package_max_bytes} is over the "
                f"{max_object_bytes(store.part_bytes)} bytes a multipart upload of 10,000 "
                f"parts of {PREFIX}S3_PART_MIB={store.part_bytes // 1024**2} holds "
                f"({PREFIX}PACKAGE_STORE=s3)"
            )
        return settings
