"""Settings come from OTA_ variables, once, and refuse bad values by name."""

from __future__ import annotations

import pytest

from ota.settings import CommonSettings, Env, SettingsError, TokenKeys, Topics


def test_defaults_describe_the_local_stack() -> None:
    settings = CommonSettings.from_env({})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.topics == Topics()
    assert (settings.partitions, settings.mqtt_device_port, settings.mqtt_platform_port) == (
        12,
        1883,
        1884,
    )
    assert settings.token_keys.current == "dev1"
    assert settings.metrics_host == "127.0.0.1"  # metrics stay on loopback unless asked


def test_values_are_read_with_their_prefix_and_trimmed() -> None:
    settings = CommonSettings.from_env(
        {
            "OTA_KAFKA_BOOTSTRAP": " k:1 ",
            "OTA_PARTITIONS": "3",
            "OTA_TOPIC_PREFIX": "t1.",
            "OTA_DOWNLOAD_BASE_URL": "https://edge.example/",
            "OTA_LOG_LEVEL": "debug",
            "OTA_METRICS_HOST": "0.0.0.0",
        }
    )
    assert settings.metrics_host == "0.0.0.0"
    assert (settings.kafka_bootstrap, settings.partitions, settings.log_level) == (
        "k:1",
        3,
        "DEBUG",
    )
    assert settings.topics.inbox == "t1.ota.inbox"
    assert settings.topics.devices == "t1.ota.devices"
    assert settings.download_base_url == "https://edge.example"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTA_PARTITIONS": "twelve"}, "OTA_PARTITIONS"),
        ({"OTA_PARTITIONS": "0"}, "OTA_PARTITIONS"),
        ({"OTA_MQTT_PORT": "70000"}, "OTA_MQTT_PORT"),
        ({"OTA_LOG_LEVEL": "loud"}, "OTA_LOG_LEVEL"),
        ({"OTA_TOKEN_KEYS": "nokey"}, "OTA_TOKEN_KEYS"),
        ({"OTA_TOKEN_KEYS": "k1:short"}, "OTA_TOKEN_KEYS"),
        ({"OTA_TOKEN_KEYS": "k-1:long-enough-secret-123"}, "OTA_TOKEN_KEYS"),
        ({"OTA_TOKEN_KEY_ID": "k9"}, "OTA_TOKEN_KEY_ID"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        CommonSettings.from_env(environ)


def test_env_helpers_parse_and_check_ranges() -> None:
    env = Env(
        {"OTA_A": "yes", "OTA_B": "0.5", "OTA_C": "a, b,,c", "OTA_D": "nan", "OTA_E": "maybe"}
    )
    assert env.flag("A", False) is True
    assert env.number("B", 1.0, min_value=0.0) == 0.5
    assert env.items("C", ()) == ("a", "b", "c")
    assert env.text("MISSING", "fallback") == "fallback"
    with pytest.raises(SettingsError, match="finite"):
        env.number("D", 1.0)
    with pytest.raises(SettingsError, match="OTA_E"):
        env.flag("E", False)
    with pytest.raises(SettingsError, match="minimum"):
        env.number("B", 1.0, min_value=1.0)


def test_token_secrets_never_show_in_repr() -> None:
    keys = TokenKeys.parse("k1:very-secret-value-123", None)
    assert "very-secret" not in repr(keys)
    assert "very-secret" not in repr(
        CommonSettings.from_env({"OTA_TOKEN_KEYS": "k1:very-secret-value-123"})
    )
