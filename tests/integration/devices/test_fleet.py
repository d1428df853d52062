"""The fleet simulator in both modes, driven by platform-side commands on the real broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from devices.behaviour import WELL_BEHAVED, Behaviour
from devices.fleet import DEFAULT_SEED, Fleet, FleetConfig, Mode, seeded_secrets
from tests.conftest import MqttPlatform
from tests.integration.devices.conftest import Platform
from tests.integration.devices.package_server import PackageServer

SIZE = 24


def _behaviour(index: int, _device: str) -> Behaviour:
    if index % 6 == 0:
        return Behaviour(fail_with=10)
    if index % 6 == 1:
        return Behaviour(fw_version="2.0")
    return WELL_BEHAVED


@pytest.mark.parametrize("mode", [Mode.CONNECTIONS, Mode.MULTIPLEXED])
async def test_fleet_reports_every_outcome(
    platform: Platform,
    packages: PackageServer,
    mqtt_platform: MqttPlatform,
    mqtt_device_port: int,
    mode: Mode,
    register_devices: Any,
) -> None:
    sha = packages.add(b"firmware" * 1000)
    config = FleetConfig(
        size=SIZE,
        mode=mode,
        prefix=f"fleet-{uuid.uuid4().hex[:8]}",
        behaviour_of=_behaviour,
        host=mqtt_platform.host,
        device_port=mqtt_device_port,
        platform_port=mqtt_platform.port,
        platform_user=mqtt_platform.user,
        platform_password=mqtt_platform.password,
        secret_of=seeded_secrets(DEFAULT_SEED),
        subscribe=False,
    )
    await register_devices(config.device_ids())
    async with Fleet(config) as fleet:
        assert fleet.online == SIZE
        await platform.wait_for(
            lambda: all(platform.events(d, "version_report") for d in config.device_ids())
        )
        paras = {
            "version": "2.0",
            "url": packages.url(sha),
            "file_size": 8000,
            "file_name": "fw",
            "sign": sha,
            "access_token": packages.token,
        }
        for device_id in config.device_ids():
            platform.command(device_id, "firmware_upgrade", paras, f"u-{device_id}")
        assert await fleet.wait_until(lambda f: f.finished() == SIZE, timeout_s=60)
        report = fleet.report()
    assert report.outcomes == {"already_latest": 4, "failed_10": 4, "succeeded": 16}
    assert set(report.durations_s) == {"p50", "p90", "p99", "max"}
    assert fleet.online == 0


@pytest.mark.parametrize("mode", [Mode.CONNECTIONS, Mode.MULTIPLEXED])
async def test_a_fleet_is_up_without_waiting_for_devices_that_come_later(
    platform: Platform,
    mqtt_platform: MqttPlatform,
    mqtt_device_port: int,
    mode: Mode,
    register_devices: Any,
) -> None:
    config = FleetConfig(
        size=4,
        mode=mode,
        prefix=f"late-{uuid.uuid4().hex[:8]}",
        behaviour_of=lambda index, _d: Behaviour(offline_for_s=3600 if index == 0 else 0),
        host=mqtt_platform.host,
        device_port=mqtt_device_port,
        platform_port=mqtt_platform.port,
        platform_user=mqtt_platform.user,
        platform_password=mqtt_platform.password,
        secret_of=seeded_secrets(DEFAULT_SEED),
        subscribe=False,
    )
    await register_devices(config.device_ids())
    fleet = Fleet(config)
    try:
        await asyncio.wait_for(fleet.start(), 30)
        assert fleet.online == 3
        late, up = config.device_ids()[:2]
        for device_id in (late, up):
            platform.command(device_id, "version_query", {}, f"q-{device_id}")
        await platform.wait_for(lambda: len(platform.events(up, "version_report")) == 2)
        assert platform.events(late) == []  # offline: it neither hears nor answers
        assert fleet.agents[late].outcome.version_queries == 0
    finally:
        await fleet.stop()
