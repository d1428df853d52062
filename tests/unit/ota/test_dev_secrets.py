"""A deployment beyond loopback refuses development secrets and placeholders, by name."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from download_edge.settings import EdgeSettings
from gateway.settings import GatewaySettings
from ota.dev_secrets import is_loopback
from ota.settings import SettingsError
from scheduler.settings import SchedulerSettings
from workers.settings import WorkerSettings

TOKEN_KEYS = "k1:a-long-random-token-secret"
CREDENTIAL_KEYS = "c1:" + base64.b64encode(bytes(range(32))).decode()
REAL_SCHEDULER = {
    "OTA_API_KEYS": "a-real-read-key:read,a-real-write-key:read+write",
    "OTA_TOKEN_KEYS": TOKEN_KEYS,
    "OTA_CREDENTIAL_KEYS": CREDENTIAL_KEYS,
    "OTA_SCHEDULER_HOST": "0.0.0.0",
}

Build = Callable[[dict[str, str]], Any]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("broker", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    "build",
    [
        SchedulerSettings.from_env,
        EdgeSettings.from_env,
        GatewaySettings.from_env,
        WorkerSettings.from_env,
    ],
)
def test_loopback_development_needs_no_setup(build: Build) -> None:
    assert build({}) is not None


@pytest.mark.parametrize(
    ("build", "environ", "named"),
    [
        (SchedulerSettings.from_env, {"OTA_SCHEDULER_HOST": "0.0.0.0"}, "OTA_API_KEYS"),
        (
            SchedulerSettings.from_env,
            {**REAL_SCHEDULER, "OTA_API_KEYS": "dev-write-key:read+write"},
            "OTA_API_KEYS",
        ),
        (
            SchedulerSettings.from_env,
            {**REAL_SCHEDULER, "OTA_TOKEN_KEYS": "dev1:dev-only-download-token-secret"},
            "OTA_TOKEN_KEYS",
        ),
        (
            SchedulerSettings.from_env,
            {
                **REAL_SCHEDULER,
                "OTA_CREDENTIAL_KEYS": "dev0:6B9do11xnNJnuYi9LJKHuS5PIRgh1jGd9+8yzBEBn8c=",
            },
            "OTA_CREDENTIAL_KEYS",
        ),
        (EdgeSettings.from_env, {"OTA_EDGE_HOST": "0.0.0.0"}, "OTA_TOKEN_KEYS"),
        (GatewaySettings.from_env, {"OTA_MQTT_HOST": "broker"}, "OTA_MQTT_PLATFORM_PASSWORD"),
        (
            GatewaySettings.from_env,
            {"OTA_METRICS_HOST": "0.0.0.0", "OTA_TOKEN_KEYS": TOKEN_KEYS},
            "OTA_MQTT_PLATFORM_PASSWORD",
        ),
        (WorkerSettings.from_env, {"OTA_METRICS_HOST": "0.0.0.0"}, "OTA_TOKEN_KEYS"),
    ],
)
def test_development_secrets_beyond_loopback_are_refused(
    build: Build, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{named} is unset or a published development"):
        build(environ)


@pytest.mark.parametrize(
    ("build", "environ", "named"),
    [
        (
            SchedulerSettings.from_env,
            {**REAL_SCHEDULER, "OTA_API_KEYS": "change-me-write-key:read+write"},
            "OTA_API_KEYS",
        ),
        (
            SchedulerSettings.from_env,
            {**REAL_SCHEDULER, "OTA_TOKEN_KEYS": "k1:change-me-to-a-long-random-secret"},
            "OTA_TOKEN_KEYS",
        ),
        (
            GatewaySettings.from_env,
            {"OTA_MQTT_PLATFORM_PASSWORD": "change-me-platform-password"},
            "OTA_MQTT_PLATFORM_PASSWORD",
        ),
        (
            EdgeSettings.from_env,
            {"OTA_TOKEN_KEYS": TOKEN_KEYS, "OTA_EDGE_ORIGIN_TOKEN": "change-me"},
            "OTA_EDGE_ORIGIN_TOKEN",
        ),
    ],
)
def test_placeholders_are_refused_even_on_loopback(
    build: Build, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{named} still holds a 'change-me' placeholder"):
        build(environ)


def test_dev_mode_on_allows_development_secrets_anywhere() -> None:
    settings = SchedulerSettings.from_env({"OTA_SCHEDULER_HOST": "0.0.0.0", "OTA_DEV_MODE": "1"})
    assert settings.http_host == "0.0.0.0"
    assert (
        EdgeSettings.from_env({"OTA_EDGE_HOST": "0.0.0.0", "OTA_DEV_MODE": "1"}).host == "0.0.0.0"
    )


def test_dev_mode_off_refuses_development_secrets_on_loopback_too() -> None:
    with pytest.raises(SettingsError, match=r"^OTA_TOKEN_KEYS .* OTA_DEV_MODE=0"):
        WorkerSettings.from_env({"OTA_DEV_MODE": "0"})


def test_real_secrets_start_on_a_public_address() -> None:
    settings = SchedulerSettings.from_env({**REAL_SCHEDULER, "OTA_DEV_MODE": "0"})
    assert settings.http_host == "0.0.0.0"
    assert not settings.credential_dev_key


def test_a_bad_dev_mode_is_refused() -> None:
    with pytest.raises(SettingsError, match="OTA_DEV_MODE"):
        WorkerSettings.from_env({"OTA_DEV_MODE": "maybe"})
