"""Kafka and Redis TLS and credentials come from settings, secrets from files too."""

from __future__ import annotations

from pathlib import Path

import pytest

from ota.client_security import KafkaSecurity, RedisSecurity
from ota.env import Env
from ota.settings import CommonSettings, SettingsError


def test_defaults_are_plaintext_without_credentials() -> None:
    settings = CommonSettings.from_env({})
    assert settings.kafka_security.client_config() == {"security_protocol": "PLAINTEXT"}
    assert settings.redis_security.client_kwargs(settings.redis_url) == {}


def test_sasl_ssl_with_scram_maps_to_kafka_python(tmp_path: Path, ca_file: Path) -> None:
    password = tmp_path / "kafka-password"
    password.write_text("s3cret-from-a-file\n")
    security = KafkaSecurity.from_env(
        Env(
            {
                "OTA_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                "OTA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "OTA_KAFKA_SASL_USERNAME": "ota",
                "OTA_KAFKA_SASL_PASSWORD_FILE": str(password),
                "OTA_KAFKA_SSL_CA_FILE": str(ca_file),
            }
        )
    )
    assert security.client_config() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ota",
        "sasl_plain_password": "s3cret-from-a-file",
        "ssl_check_hostname": True,
        "ssl_cafile": str(ca_file),
    }
    assert "s3cret" not in repr(security)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTA_KAFKA_SECURITY_PROTOCOL": "TLS"}, "OTA_KAFKA_SECURITY_PROTOCOL"),
        (
            {"OTA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "OTA_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "OTA_KAFKA_SASL_MECHANISM",
        ),
        (
            {"OTA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "OTA_KAFKA_SASL_MECHANISM": "PLAIN"},
            "OTA_KAFKA_SASL_USERNAME",
        ),
        (
            {
                "OTA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "OTA_KAFKA_SASL_MECHANISM": "PLAIN",
                "OTA_KAFKA_SASL_USERNAME": "u",
            },
            "OTA_KAFKA_SASL_PASSWORD",
        ),
        ({"OTA_KAFKA_SASL_USERNAME": "u"}, "OTA_KAFKA_SASL_"),
        (
            {"OTA_KAFKA_SECURITY_PROTOCOL": "SSL", "OTA_KAFKA_SSL_CA_FILE": "/nonexistent/ca"},
            "OTA_KAFKA_SSL_CA_FILE",
        ),
        ({"OTA_REDIS_USERNAME": "ota"}, "OTA_REDIS_PASSWORD"),
        ({"OTA_REDIS_URL": "http://127.0.0.1:6379/0"}, "OTA_REDIS_URL"),
        ({"OTA_REDIS_PASSWORD_FILE": "/nonexistent/pw"}, "OTA_REDIS_PASSWORD_FILE"),
        ({"OTA_REDIS_PASSWORD": "a", "OTA_REDIS_PASSWORD_FILE": "/x"}, "both set"),
    ],
)
def test_bad_security_settings_are_refused_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        CommonSettings.from_env(environ)


def test_ssl_files_need_a_tls_protocol(ca_file: Path) -> None:
    with pytest.raises(SettingsError, match="is not SSL or SASL_SSL"):
        CommonSettings.from_env({"OTA_KAFKA_SSL_CA_FILE": str(ca_file)})


def test_redis_acl_user_and_tls_map_to_redis_py(ca_file: Path) -> None:
    settings = CommonSettings.from_env(
        {
            "OTA_REDIS_URL": "rediss://redis.internal:6380/0",
            "OTA_REDIS_USERNAME": "ota",
            "OTA_REDIS_PASSWORD": "redis-secret",
            "OTA_REDIS_TLS_CA_FILE": str(ca_file),
        }
    )
    assert settings.redis_security.client_kwargs(settings.redis_url) == {
        "username": "ota",
        "password": "redis-secret",
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(ca_file),
    }
    # A plaintext URL gets the credentials and no TLS arguments redis-py would reject.
    assert RedisSecurity(password="p").client_kwargs("redis://h:6379/1") == {"password": "p"}


def test_redis_tls_files_need_a_rediss_url(ca_file: Path) -> None:
    with pytest.raises(SettingsError, match="OTA_REDIS_URL is not rediss://"):
        CommonSettings.from_env({"OTA_REDIS_TLS_CA_FILE": str(ca_file)})


def test_secret_files_feed_the_shared_secrets(tmp_path: Path) -> None:
    keys = tmp_path / "token-keys"
    keys.write_text("k1:a-long-random-token-secret\n")
    platform = tmp_path / "platform"
    platform.write_text("platform-password-from-file")
    settings = CommonSettings.from_env(
        {"OTA_TOKEN_KEYS_FILE": str(keys), "OTA_MQTT_PLATFORM_PASSWORD_FILE": str(platform)}
    )
    assert settings.token_keys.secrets == {"k1": b"a-long-random-token-secret"}
    assert settings.mqtt_platform_password == "platform-password-from-file"


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match=r"OTA_TOKEN_KEYS_FILE=.* is empty"):
        CommonSettings.from_env({"OTA_TOKEN_KEYS_FILE": str(empty)})
