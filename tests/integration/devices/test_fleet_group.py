"""A fleet split over two simulator processes (`ops.fleet_group.FleetGroup`) on the real broker:
every device is simulated, commanded and reported exactly once, and the merged report
covers the whole fleet."""

from __future__ import annotations

import os
import uuid

from ops.fleet_group import FleetGroup
from tests.conftest import MqttPlatform
from tests.integration.devices.conftest import Platform
from tests.integration.devices.package_server import PackageServer

SIZE = 21


def _finals(platform: Platform, device_id: str) -> list[object]:
    return [
        e
        for e in platform.events(device_id, "upgrade_progress_report")
        if e.paras.get("progress") == 100
    ]


async def test_two_processes_cover_every_device_once(
    platform: Platform, packages: PackageServer, mqtt_platform: MqttPlatform, mqtt_device_port: int
) -> None:
    env = {
        **os.environ,
        "OTA_MQTT_HOST": mqtt_platform.host,
        "OTA_MQTT_PORT": str(mqtt_device_port),
        "OTA_MQTT_PLATFORM_PORT": str(mqtt_platform.port),
        "OTA_MQTT_PLATFORM_USER": mqtt_platform.user,
        "OTA_MQTT_PLATFORM_PASSWORD": mqtt_platform.password,
    }
    prefix = f"grp-{uuid.uuid4().hex[:8]}"
    group = FleetGroup(
        env,
        size=SIZE,
        processes=2,
        prefix=prefix,
        mode="multiplexed",
        mix="none",
        report_every_s=0.5,
    )
    ids = [f"{prefix}-{n:07d}" for n in range(SIZE)]
    sha = packages.add(b"firmware" * 2000)
    try:
        ready = await group.start(timeout_s=60)
        assert ready["online"] == SIZE
        assert ready["kinds"] == {"ok": SIZE}
        await platform.wait_for(lambda: all(platform.events(d, "version_report") for d in ids))
        paras = {
            "version": "2.0",
            "url": packages.url(sha),
            "file_size": 16000,
            "file_name": "fw",
            "sign": sha,
            "access_token": packages.token,
        }
        for device_id in ids:
            platform.command(device_id, "firmware_upgrade", paras, f"u-{device_id}")
        await platform.wait_for(lambda: all(_finals(platform, d) for d in ids), timeout_s=30)
    finally:
        report = await group.stop()
    assert {d for d in platform.reports if d.startswith(prefix)} == set(ids)
    for device_id in ids:
        assert len(platform.events(device_id, "version_report")) == 1
        assert len(_finals(platform, device_id)) == 1
    assert report["size"] == SIZE
    assert report["online"] == SIZE
    assert report["outcomes"] == {"succeeded": SIZE}
    assert sum(report["histogram"].values()) == SIZE
    assert set(report["durations_s"]) == {"p50", "p90", "p99", "max"}
