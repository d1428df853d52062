"""OTA_PACKAGE_STORE and OTA_S3_*: the volume by default, a complete bucket or a clear error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from download_edge.settings import EdgeSettings
from ota.env import Env, SettingsError
from ota.object_store import package_store
from scheduler.settings import SchedulerSettings

Settings = SchedulerSettings | EdgeSettings

S3 = {
    "OTA_PACKAGE_STORE": "s3",
    "OTA_S3_ENDPOINT": "http://minio:9000/",
    "OTA_S3_BUCKET": "ota-packages",
    "OTA_S3_ACCESS_KEY_ID": "ota",
    "OTA_S3_SECRET_ACCESS_KEY": "secret-key",
}


def test_the_volume_is_the_default() -> None:
    assert package_store(Env({})) is None
    assert package_store(Env({"OTA_PACKAGE_STORE": "volume", "OTA_S3_BUCKET": "x"})) is None


def test_a_complete_bucket_setting(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    env = {k: v for k, v in S3.items() if k != "OTA_S3_SECRET_ACCESS_KEY"}
    settings = package_store(Env({**env, "OTA_S3_SECRET_ACCESS_KEY_FILE": str(secret)}))
    assert settings is not None
    assert settings.endpoint == "http://minio:9000"
    assert (settings.bucket, settings.region) == ("ota-packages", "us-east-1")
    assert settings.credentials.secret_key == "from-a-file"
    assert "from-a-file" not in repr(settings)
    assert settings.part_bytes == 64 * 1024**2


@pytest.mark.parametrize("mib", [5, 100, 5120])
def test_the_part_size_is_set_in_mib_within_s3s_limits(mib: int) -> None:
    settings = package_store(Env({**S3, "OTA_S3_PART_MIB": str(mib)}))
    assert settings is not None
    assert settings.part_bytes == mib * 1024**2


def test_settings_built_in_code_hold_to_the_same_part_limits() -> None:
    settings = package_store(Env(S3))
    assert settings is not None
    with pytest.raises(ValueError, match="part_bytes=1024 is outside"):
        dataclasses.replace(settings, part_bytes=1024)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"OTA_PACKAGE_STORE": "nfs"}, "OTA_PACKAGE_STORE='nfs' must be one of volume, s3"),
        ({"OTA_S3_ENDPOINT": "minio:9000"}, "OTA_S3_ENDPOINT"),
        ({"OTA_S3_ENDPOINT": "http://minio:9000/bucket"}, "OTA_S3_ENDPOINT"),
        ({"OTA_S3_BUCKET": "Ota_Packages"}, "not a valid bucket name"),
        ({"OTA_S3_BUCKET": ""}, "not a valid bucket name"),
        ({"OTA_S3_ACCESS_KEY_ID": ""}, "needs OTA_S3_ACCESS_KEY_ID"),
        ({"OTA_S3_TIMEOUT_S": "0"}, "OTA_S3_TIMEOUT_S"),
        ({"OTA_S3_PART_MIB": "4"}, "OTA_S3_PART_MIB=4 is below the minimum 5"),
        ({"OTA_S3_PART_MIB": "5121"}, "OTA_S3_PART_MIB=5121 is above the maximum 5120"),
        ({"OTA_S3_PART_MIB": "64.5"}, "OTA_S3_PART_MIB"),
    ],
)
def test_a_bad_setting_fails_fast_naming_it(changes: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        package_store(Env({**S3, **changes}))


@pytest.mark.parametrize("service", [SchedulerSettings, EdgeSettings])
def test_an_env_example_placeholder_secret_key_is_refused(service: type[Settings]) -> None:
    with pytest.raises(SettingsError, match="OTA_S3_SECRET_ACCESS_KEY still holds"):
        service.from_env({**S3, "OTA_S3_SECRET_ACCESS_KEY": "change-me-s3-secret"})


def test_the_largest_package_is_what_ten_thousand_parts_hold() -> None:
    most = 10_000 * 5 * 1024**2
    env = {**S3, "OTA_S3_PART_MIB": "5"}
    settings = SchedulerSettings.from_env({**env, "OTA_PACKAGE_MAX_BYTES": str(most)})
    assert settings.package_max_bytes == most
    with pytest.raises(SettingsError, match=f"OTA_PACKAGE_MAX_BYTES={most + 1} is over the {most}"):
        SchedulerSettings.from_env({**env, "OTA_PACKAGE_MAX_BYTES": str(most + 1)})
