"""The worker's static membership id: optional, and only what Kafka accepts."""

from __future__ import annotations

import pytest

from ota.settings import SettingsError
from workers.settings import WorkerSettings


def test_no_instance_id_means_a_dynamic_member() -> None:
    assert WorkerSettings.from_env({}).instance_id == ""


def test_an_instance_id_is_read() -> None:
    settings = WorkerSettings.from_env({"OTA_WORKER_INSTANCE_ID": "ota-workers-3.pod_a"})
    assert settings.instance_id == "ota-workers-3.pod_a"


@pytest.mark.parametrize("bad", ["has space", "slash/y", "x" * 250])
def test_an_instance_id_kafka_would_refuse_is_a_settings_error(bad: str) -> None:
    with pytest.raises(SettingsError, match="OTA_WORKER_INSTANCE_ID"):
        WorkerSettings.from_env({"OTA_WORKER_INSTANCE_ID": bad})
