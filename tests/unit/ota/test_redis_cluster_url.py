"""The Redis Cluster setting: a `+cluster` URL scheme, checked when the settings are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from ota.client_security import RedisSecurity
from ota.env import SettingsError
from ota.redis_clients import is_cluster_url
from ota.settings import CommonSettings
from scheduler.main import settings_from_env


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis+cluster://10.0.0.5:7001", True),
        ("redis+cluster://ota:pw@r1:7001,r2:7001,r3:7001/0", True),
        ("rediss+cluster://redis.internal:7001/0", True),
        ("redis://127.0.0.1:6379/0", False),
        ("unix:///run/redis.sock", False),
    ],
)
def test_a_cluster_url_is_accepted_and_recognised(url: str, cluster: bool) -> None:
    settings = CommonSettings.from_env({"OTA_REDIS_URL": url})
    assert settings.redis_url == url
    assert is_cluster_url(settings.redis_url) is cluster


def test_a_cluster_has_only_database_0() -> None:
    with pytest.raises(SettingsError, match="a Redis Cluster has only database 0"):
        CommonSettings.from_env({"OTA_REDIS_URL": "redis+cluster://127.0.0.1:7001/3"})


@pytest.mark.parametrize("nodes", ["r1:7001,r2", "r1:7001,", "r1:70000", "r1"])
def test_every_cluster_node_is_host_and_port(nodes: str) -> None:
    with pytest.raises(SettingsError, match="is not host:port"):
        CommonSettings.from_env({"OTA_REDIS_URL": f"redis+cluster://{nodes}"})


def test_a_tls_cluster_url_gets_the_tls_arguments(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    security = RedisSecurity(ca_file=ca)
    url = security.check_url("REDIS_URL", "rediss+cluster://redis.internal:7001")
    assert security.client_kwargs(url) == {"ssl_cert_reqs": "required", "ssl_ca_certs": str(ca)}
    with pytest.raises(SettingsError, match="is not rediss:// or rediss\\+cluster://"):
        security.check_url("REDIS_URL", "redis+cluster://redis.internal:7001")


@pytest.mark.parametrize("variable", ["OTA_REDIS_URL", "OTA_SCHEDULER_REDIS_URL"])
def test_the_scheduler_runs_on_a_cluster_with_a_standalone_credential_store(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTA_SCHEDULER_REDIS_URL", raising=False)
    monkeypatch.delenv("OTA_CREDENTIALS_REDIS_URL", raising=False)
    monkeypatch.setenv(variable, "redis+cluster://127.0.0.1:7001")
    with pytest.raises(SettingsError, match="OTA_CREDENTIALS_REDIS_URL: the device credential"):
        settings_from_env()  # the store defaults to the scheduler's Redis: the cluster
    monkeypatch.setenv("OTA_CREDENTIALS_REDIS_URL", "redis://127.0.0.1:6379/1")
    settings = settings_from_env()
    assert settings.common.redis_url == "redis+cluster://127.0.0.1:7001"
    assert settings.credentials_redis_url == "redis://127.0.0.1:6379/1"
    monkeypatch.setenv("OTA_CREDENTIALS_REDIS_URL", "redis+cluster://127.0.0.1:7001")
    with pytest.raises(SettingsError, match="must be a standalone Redis"):
        settings_from_env()


def test_the_scheduler_takes_its_own_redis_beside_the_services_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTA_REDIS_URL", "redis+cluster://127.0.0.1:7001")
    monkeypatch.setenv("OTA_SCHEDULER_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.delenv("OTA_CREDENTIALS_REDIS_URL", raising=False)
    settings = settings_from_env()
    assert settings.common.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.credentials_redis_url == "redis://127.0.0.1:6379/3"  # it defaults to it
    monkeypatch.setenv("OTA_SCHEDULER_REDIS_URL", "http://127.0.0.1:6379")
    with pytest.raises(SettingsError, match="OTA_SCHEDULER_REDIS_URL must start with redis://"):
        settings_from_env()
