"""Each service, started as a process the way the image starts it, exits with status 2
naming the setting when it would run on a development secret or a placeholder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BASE = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(ROOT)}
IMAGE = {"OTA_DEV_MODE": "0", "OTA_SCHEDULER_HOST": "0.0.0.0", "OTA_EDGE_HOST": "0.0.0.0"}


def start(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**BASE, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "env", "named"),
    [
        ("scheduler", IMAGE, "OTA_API_KEYS is unset or a published development value"),
        ("download_edge", IMAGE, "OTA_TOKEN_KEYS is unset or a published development value"),
        ("workers", IMAGE, "OTA_TOKEN_KEYS is unset or a published development value"),
        ("gateway", IMAGE, "OTA_MQTT_PLATFORM_PASSWORD is unset or a published development"),
        (
            "scheduler",
            {"OTA_API_KEYS": "change-me-write-key:read+write"},
            "OTA_API_KEYS still holds a 'change-me' placeholder",
        ),
        (
            "download_edge",
            {"OTA_EDGE_HOST": "0.0.0.0"},
            "OTA_TOKEN_KEYS is unset or a published development value, and the service "
            "listens on or connects to 0.0.0.0",
        ),
        (
            "gateway",
            {"OTA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "OTA_KAFKA_SASL_MECHANISM": "SCRAM"},
            "OTA_KAFKA_SASL_MECHANISM='SCRAM' is not one of",
        ),
        ("workers", {"OTA_REDIS_PASSWORD_FILE": "/nonexistent"}, "OTA_REDIS_PASSWORD_FILE"),
    ],
)
def test_a_service_refuses_to_start_naming_the_setting(
    module: str, env: dict[str, str], named: str
) -> None:
    result = start(module, env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr
