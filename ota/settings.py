"""Settings read once from OTA_-prefixed environment variables.

Each service builds one immutable settings object at start-up with `from_env`,
and passes it down; nothing else reads `os.environ`. Bad values fail fast with a
`SettingsError` naming the variable. Units are part of the names (`_ms`, `_s`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

PREFIX = "OTA_"
T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class Env:
    """Typed, validated access to OTA_ variables of one environment mapping."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def _parse(self, name: str, default: T, convert: Callable[[str], T], what: str) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}{name}={raw!r} is not {what}") from exc

    def text(self, name: str, default: str) -> str:
        raw = self._raw(name)
        return default if raw is None else raw

    def integer(
        self, name: str, default: int, *, min_value: int | None = None, max_value: int | None = None
    ) -> int:
        value = self._parse(name, default, int, "an integer")
        _check_range(name, value, min_value, max_value)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> float:
        value = self._parse(name, default, float, "a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise SettingsError(f"{PREFIX}{name} must be a finite number")
        _check_range(name, value, min_value, max_value)
        return value

    def flag(self, name: str, default: bool) -> bool:
        return self._parse(name, default, _parse_bool, "a boolean (true/false/1/0/yes/no)")

    def items(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise SettingsError(f"{PREFIX}{name}={value} is below the minimum {low}")
    if high is not None and value > high:
        raise SettingsError(f"{PREFIX}{name}={value} is above the maximum {high}")


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
    devices: str = "ota.devices"

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


# A development key so the local stack works out of the box; production sets its own.
DEV_TOKEN_KEYS = "dev1:dev-only-download-token-secret"


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
    download_base_url: str = "http://127.0.0.1:8443"
    log_level: str = "INFO"
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 where a scraper reaches the pod (Kubernetes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommonSettings:
        env = Env(environ)
        log_level = env.text("LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"{PREFIX}LOG_LEVEL={log_level!r} is not DEBUG/INFO/WARNING/ERROR")
        return cls(
            kafka_bootstrap=env.text("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            redis_url=env.text("REDIS_URL", "redis://127.0.0.1:6379/0"),
            topics=Topics.with_prefix(env.text("TOPIC_PREFIX", "")),
            partitions=env.integer("PARTITIONS", 12, min_value=1, max_value=10_000),
            mqtt_host=env.text("MQTT_HOST", "127.0.0.1"),
            mqtt_device_port=env.integer("MQTT_PORT", 1883, min_value=1, max_value=65535),
            mqtt_platform_port=env.integer(
                "MQTT_PLATFORM_PORT", 1884, min_value=1, max_value=65535
            ),
            mqtt_platform_user=env.text("MQTT_PLATFORM_USER", "ota-platform"),
            mqtt_platform_password=env.text("MQTT_PLATFORM_PASSWORD", "ota-platform-secret"),
            token_keys=TokenKeys.parse(
                env.text("TOKEN_KEYS", DEV_TOKEN_KEYS), env.text("TOKEN_KEY_ID", "") or None
            ),
            download_base_url=env.text("DOWNLOAD_BASE_URL", "http://127.0.0.1:8443").rstrip("/"),
            log_level=log_level,
            metrics_host=env.text("METRICS_HOST", "127.0.0.1"),
        )
