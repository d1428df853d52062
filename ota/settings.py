"""Settings read once from OTA_-prefixed environment variables.

Each service builds one immutable settings object at start-up with `from_env`,
and passes it down; nothing else reads `os.environ`. Bad values fail fast with a
`SettingsError` naming the variable. Units are part of the names (`_ms`, `_s`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ota.client_security import KafkaSecurity, RedisSecurity
from ota.dev_secrets import DevMode, SecretUse
from ota.env import PREFIX, Env, SettingsError

# The Kafka clients the producers can run on (OTA_KAFKA_CLIENT, ota/kafka_producer.py).
KAFKA_CLIENTS = ("kafka-python", "confluent-kafka")

__all__ = [
    "DEV_PLATFORM_PASSWORD",
    "DEV_TOKEN_KEYS",
    "PREFIX",
    "TOKEN_LIFETIME_S",
    "CommonSettings",
    "DevMode",
    "Env",
    "SettingsError",
    "TokenKeys",
    "Topics",
]


@dataclass(frozen=True)
class Topics:
    """Kafka topic names; OTA_TOPIC_PREFIX lets tests and tenants run side by side."""

    inbox: str = "ota.inbox"
    commands: str = "ota.commands"
    job_events: str = "ota.job-events"
    dead_letters: str = "ota.dead-letters"
    task_events: str = "ota.task-events"
    packages: str = "ota.packages"
    tasks: str = "ota.tasks"
    task_devices: str = "ota.task-devices"
    devices: str = "ota.devices"
    audit: str = "ota.audit"
    api_keys: str = "ota.api-keys"
    webhooks: str = "ota.webhooks"
    credentials: str = "ota.credentials"

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        base = cls()
        return cls(**{name: prefix + getattr(base, name) for name in base.__dataclass_fields__})


@dataclass(frozen=True)
class TokenKeys:
    """HMAC keys for download tokens by key id; `current` signs, all verify (rotation)."""

    current: str
    secrets: Mapping[str, bytes] = field(repr=False)

    @classmethod
    def parse(cls, spec: str, current: str | None) -> TokenKeys:
        """`spec` is `kid:secret[,kid:secret...]`; the first key signs unless `current` says."""
        secrets: dict[str, bytes] = {}
        for item in spec.split(","):
            kid, sep, secret = item.strip().partition(":")
            if not sep or not kid or not secret:
                raise SettingsError(f"{PREFIX}TOKEN_KEYS entry {kid!r} is not kid:secret")
            if not kid.isalnum():
                raise SettingsError(f"{PREFIX}TOKEN_KEYS key id {kid!r} must be alphanumeric")
            if len(secret) < 16:
                raise SettingsError(f"{PREFIX}TOKEN_KEYS secret of {kid!r} is under 16 chars")
            secrets[kid] = secret.encode()
        chosen = current or next(iter(secrets))
        if chosen not in secrets:
            raise SettingsError(f"{PREFIX}TOKEN_KEY_ID={chosen!r} is not in OTA_TOKEN_KEYS")
        return cls(current=chosen, secrets=secrets)


# Development secrets so the local stack works out of the box; a deployment beyond
# loopback refuses them (ota/dev_secrets.py) and sets its own.
DEV_TOKEN_KEYS = "dev1:dev-only-download-token-secret"
DEV_PLATFORM_PASSWORD = "ota-platform-secret"
# How long a download token lives from the moment its command is made: IoTDA's 24 h.
TOKEN_LIFETIME_S = 24 * 3600
MAX_TOKEN_LIFETIME_S = 30 * 24 * 3600


@dataclass(frozen=True)
class CommonSettings:
    """What every service needs: where Kafka, Redis and the broker are, and shared keys."""

    kafka_bootstrap: str
    redis_url: str
    topics: Topics
    partitions: int
    mqtt_host: str
    mqtt_device_port: int
    mqtt_platform_port: int
    mqtt_platform_user: str
    mqtt_platform_password: str = field(repr=False)
    token_keys: TokenKeys = field(repr=False)
    # The lifetime of the download tokens the workers mint into upgrade commands.
    token_lifetime_s: int = TOKEN_LIFETIME_S
    download_base_url: str = "http://127.0.0.1:8443"
    log_level: str = "INFO"
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 where a scraper reaches the pod (Kubernetes)
    # The CA that simulated devices verify https download URLs against (the system's CAs
    # when unset); the services themselves never use it.
    download_ca_file: Path | None = None
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # The Kafka client (ota/kafka_producer.py): "confluent-kafka" (librdkafka, the default:
    # less CPU per record, bench/RESULTS.md) or "kafka-python".
    kafka_client: str = "confluent-kafka"
    redis_security: RedisSecurity = field(default_factory=RedisSecurity)
    dev_mode: DevMode = DevMode.AUTO
    # /livez fails once a loop's heartbeat is older than this (ota/health.py).
    liveness_limit_s: float = 30.0
    # ... and once a group consumer has been out of its group for longer than this.
    liveness_group_limit_s: float = 120.0

    def token_keys_use(self) -> SecretUse:
        """OTA_TOKEN_KEYS as a secret this service runs with (ota/dev_secrets.py)."""
        dev_secrets = TokenKeys.parse(DEV_TOKEN_KEYS, None).secrets.values()
        return SecretUse.of(
            "TOKEN_KEYS",
            b",".join(self.token_keys.secrets.values()).decode(),
            development=any(s in dev_secrets for s in self.token_keys.secrets.values()),
        )

    def platform_password_use(self) -> SecretUse:
        """OTA_MQTT_PLATFORM_PASSWORD as a secret this service runs with."""
        return SecretUse.of(
            "MQTT_PLATFORM_PASSWORD",
            self.mqtt_platform_password,
            development=self.mqtt_platform_password == DEV_PLATFORM_PASSWORD,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommonSettings:
        env = Env(environ)
        log_level = env.text("LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"{PREFIX}LOG_LEVEL={log_level!r} is not DEBUG/INFO/WARNING/ERROR")
        redis_security = RedisSecurity.from_env(env)
        return cls(
            kafka_bootstrap=env.text("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            redis_url=redis_security.check_url(
                "REDIS_URL", env.text("REDIS_URL", "redis://127.0.0.1:6379/0")
            ),
            topics=Topics.with_prefix(env.text("TOPIC_PREFIX", "")),
            partitions=env.integer("PARTITIONS", 12, min_value=1, max_value=10_000),
            mqtt_host=env.text("MQTT_HOST", "127.0.0.1"),
            mqtt_device_port=env.integer("MQTT_PORT", 1883, min_value=1, max_value=65535),
            mqtt_platform_port=env.integer(
                "MQTT_PLATFORM_PORT", 1884, min_value=1, max_value=65535
            ),
            mqtt_platform_user=env.text("MQTT_PLATFORM_USER", "ota-platform"),
            mqtt_platform_password=env.secret("MQTT_PLATFORM_PASSWORD", DEV_PLATFORM_PASSWORD),
            token_keys=TokenKeys.parse(
                env.secret("TOKEN_KEYS", DEV_TOKEN_KEYS), env.text("TOKEN_KEY_ID", "") or None
            ),
            token_lifetime_s=env.integer(
                "TOKEN_LIFETIME_S",
                TOKEN_LIFETIME_S,
                min_value=1,
                max_value=MAX_TOKEN_LIFETIME_S,
            ),
            download_base_url=env.text("DOWNLOAD_BASE_URL", "http://127.0.0.1:8443").rstrip("/"),
            log_level=log_level,
            metrics_host=env.text("METRICS_HOST", "127.0.0.1"),
            download_ca_file=env.readable_file("DOWNLOAD_CA_FILE"),
            kafka_security=KafkaSecurity.from_env(env),
            kafka_client=_kafka_client(env),
            redis_security=redis_security,
            dev_mode=DevMode.from_env(env),
            liveness_limit_s=env.number("LIVENESS_LIMIT_S", 30.0, min_value=1.0),
            liveness_group_limit_s=env.number("LIVENESS_GROUP_LIMIT_S", 120.0, min_value=1.0),
        )


def _kafka_client(env: Env) -> str:
    client = env.text("KAFKA_CLIENT", "confluent-kafka").lower()
    if client not in KAFKA_CLIENTS:
        raise SettingsError(
            f"{PREFIX}KAFKA_CLIENT={client!r} is not one of " + ", ".join(KAFKA_CLIENTS)
        )
    return client
