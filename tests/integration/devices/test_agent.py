"""The reference agent against the real broker and a Range-capable package server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devices.behaviour import WELL_BEHAVED, Behaviour
from devices.connection import DeviceAccess, DeviceConnection
from devices.fleet import DEFAULT_SEED, derived_secret
from devices.http import HttpClient
from tests.integration.devices.conftest import Platform, new_device
from tests.integration.devices.package_server import PackageServer

BODY = bytes(range(256)) * 400  # 100 KiB


@pytest.fixture
async def connect(
    http: HttpClient, mqtt_host: str, mqtt_device_port: int, register_devices: Any
) -> AsyncIterator[Callable[..., Any]]:
    """Opens IoTDA-style device connections: registered secret, no SUBSCRIBE."""
    opened: list[DeviceConnection] = []

    async def open_device(device_id: str, behaviour: Behaviour = WELL_BEHAVED) -> DeviceConnection:
        await register_devices([device_id])
        access = DeviceAccess(secret=derived_secret(DEFAULT_SEED, device_id), subscribe=False)
        connection = DeviceConnection(
            device_id, mqtt_host, mqtt_device_port, http, behaviour, access=access
        )
        await connection.start()
        opened.append(connection)
        return connection

    yield open_device
    for connection in opened:
        await connection.stop()


def _upgrade(packages: PackageServer, sha: str, version: str, v2: bool = False) -> dict[str, Any]:
    paras: dict[str, Any] = {
        "version": version,
        "file_size": len(packages.packages[sha]),
        "file_name": "fw.bin",
        "sign": sha,
        "url": packages.url(sha),
    }
    if v2:
        paras["url"] += f"?token={packages.token}"
    else:
        paras.update(access_token=packages.token, expires=86400)
    return paras


def _final(platform: Platform, device_id: str) -> list[Any]:
    return [
        e
        for e in platform.events(device_id, "upgrade_progress_report")
        if e.paras.get("progress") == 100
    ]


async def test_reports_at_boot_and_answers_version_query(platform: Platform, connect: Any) -> None:
    device_id = new_device()
    await connect(device_id, Behaviour(fw_version="1.2", sw_version="s7"))
    await platform.wait_for(lambda: len(platform.events(device_id, "version_report")) == 1)
    platform.command(device_id, "version_query", {}, "q-1")
    await platform.wait_for(lambda: len(platform.events(device_id, "version_report")) == 2)
    answer = platform.events(device_id, "version_report")[1]
    assert answer.paras == {"fw_version": "1.2", "sw_version": "s7"}
    assert answer.event_id == "q-1"


@pytest.mark.parametrize(
    ("event_type", "v2"),
    [
        ("firmware_upgrade", False),
        ("software_upgrade", False),
        ("firmware_upgrade_v2", True),
        ("software_upgrade_v2", True),
    ],
)
async def test_every_upgrade_command_succeeds(
    platform: Platform, packages: PackageServer, connect: Any, event_type: str, v2: bool
) -> None:
    device_id = new_device()
    connection = await connect(device_id)
    sha = packages.add(BODY)
    platform.command(device_id, event_type, _upgrade(packages, sha, "2.0", v2), "u-1")
    await platform.wait_for(lambda: len(_final(platform, device_id)) == 1)
    final = _final(platform, device_id)[0]
    assert final.paras["result_code"] == 0
    assert final.paras["version"] == "2.0"
    assert final.event_id == "u-1"
    progress = [e.paras["progress"] for e in platform.events(device_id, "upgrade_progress_report")]
    assert progress == sorted(progress)
    assert progress[0] == 0
    agent = connection.agent
    assert (agent.fw_version, agent.sw_version) == (
        ("2.0", "1.0") if "firmware" in event_type else ("1.0", "2.0")
    )
    request = packages.requests[-1]
    if v2:
        assert "authorization" not in request
        assert "token=" in request[":path"]
    else:
        assert request["authorization"] == f"Bearer {packages.token}"


async def test_interrupted_download_resumes_with_range_and_if_range(
    platform: Platform, packages: PackageServer, connect: Any
) -> None:
    device_id = new_device()
    connection = await connect(
        device_id, Behaviour(drop_download_at=30_000, offline_mid_download_s=0.2)
    )
    sha = packages.add(BODY)
    platform.command(device_id, "firmware_upgrade", _upgrade(packages, sha, "2.0"), "u-2")
    await platform.wait_for(lambda: len(_final(platform, device_id)) == 1)
    assert _final(platform, device_id)[0].paras["result_code"] == 0
    resumed = packages.requests[-1]
    assert resumed["range"] == "bytes=30000-"
    assert resumed["if-range"] == f'"{sha}"'
    assert connection.agent.outcome.resumed_downloads == 1


async def test_a_command_repeated_after_a_reconnect_is_not_acted_on_again(
    platform: Platform, packages: PackageServer, connect: Any
) -> None:
    """The platform sends a pending upgrade again after a reconnect, under the same id with a
    fresh token: the device goes on with the download it has (a Range request from where it
    stopped), never starts it again from byte 0, and reports its result once."""
    device_id = new_device()
    connection = await connect(
        device_id, Behaviour(drop_download_at=30_000, offline_mid_download_s=0.2)
    )
    await platform.wait_for(lambda: len(platform.events(device_id, "version_report")) == 1)
    sha = packages.add(BODY)
    before = len(packages.requests)
    platform.command(device_id, "firmware_upgrade", _upgrade(packages, sha, "2.0"), "u-8")
    # Its boot report on the new connection: it is back, its download resuming.
    await platform.wait_for(lambda: len(platform.events(device_id, "version_report")) == 2)
    platform.command(device_id, "firmware_upgrade", _upgrade(packages, sha, "2.0"), "u-8")
    await platform.wait_for(lambda: len(_final(platform, device_id)) == 1)
    # A version query after the repeat: once it is answered, the repeat has been handled.
    platform.command(device_id, "version_query", {}, "q-8")
    await platform.wait_for(lambda: len(platform.events(device_id, "version_report")) == 3)
    assert [e.event_id for e in _final(platform, device_id)] == ["u-8"]
    assert connection.agent.outcome.upgrade_commands == 1
    fetches = packages.requests[before:]
    assert [r.get("range") for r in fetches] == [None, "bytes=30000-"]


async def test_a_package_with_the_wrong_hash_reports_7(
    platform: Platform, packages: PackageServer, connect: Any
) -> None:
    device_id = new_device()
    await connect(device_id)
    sha = packages.add(BODY)
    paras = _upgrade(packages, sha, "2.0")
    paras["sign"] = "0" * 64
    paras["url"] = packages.url(sha)
    platform.command(device_id, "firmware_upgrade", paras, "u-3")
    await platform.wait_for(lambda: len(_final(platform, device_id)) == 1)
    final = _final(platform, device_id)[0]
    assert (final.paras["result_code"], final.paras["version"]) == (7, "1.0")


async def test_a_bad_token_fails_the_download(
    platform: Platform, packages: PackageServer, connect: Any
) -> None:
    device_id = new_device()
    await connect(device_id)
    sha = packages.add(BODY)
    paras = _upgrade(packages, sha, "2.0")
    paras["access_token"] = "wrong"
    platform.command(device_id, "firmware_upgrade", paras, "u-4")
    await platform.wait_for(lambda: len(_final(platform, device_id)) == 1, timeout_s=30)
    assert _final(platform, device_id)[0].paras["result_code"] == 6


@pytest.mark.parametrize(("code", "downloads"), [(1, 0), (5, 0), (9, 1), (10, 1), (255, 1)])
async def test_scripted_failure_codes(
    platform: Platform, packages: PackageServer, connect: Any, code: int, downloads: int
) -> None:
    device_id = new_device()
    await connect(device_id, Behaviour(fail_with=code))
    sha = packages.add(BODY)
    before = len(packages.requests)
    platform.command(device_id, "firmware_upgrade", _upgrade(packages, sha, "2.0"), "u-5")
    await platform.wait_for(lambda: len(_final(platform, device_id)) == 1)
    final = _final(platform, device_id)[0]
    assert (final.paras["result_code"], final.paras["version"]) == (code, "1.0")
    assert len(packages.requests) - before == downloads


async def test_already_on_target_reports_3(
    platform: Platform, packages: PackageServer, connect: Any
) -> None:
    device_id = new_device()
    await connect(device_id, Behaviour(fw_version="2.0"))
    sha = packages.add(BODY)
    platform.command(device_id, "firmware_upgrade", _upgrade(packages, sha, "2.0"), "u-6")
    await platform.wait_for(lambda: len(_final(platform, device_id)) == 1)
    assert _final(platform, device_id)[0].paras["result_code"] == 3
    assert packages.requests == []


async def test_wrong_version_twice_answers_and_silence(
    platform: Platform, packages: PackageServer, connect: Any
) -> None:
    liar, echo, mute = new_device("liar"), new_device("echo"), new_device("mute")
    await connect(liar, Behaviour(wrong_version="9.9"))
    await connect(echo, Behaviour(answer_twice=True, report_at_boot=False))
    silent = await connect(mute, Behaviour(answer_version_query=False, report_at_boot=False))
    sha = packages.add(BODY)
    platform.command(liar, "firmware_upgrade", _upgrade(packages, sha, "2.0"), "u-7")
    platform.command(echo, "version_query", {}, "q-2")
    platform.command(mute, "version_query", {}, "q-3")
    platform.command(echo, "version_query", {}, "q-2")  # a repeated command is not acted on again
    await platform.wait_for(lambda: len(_final(platform, liar)) == 1)
    await platform.wait_for(lambda: len(platform.events(echo, "version_report")) == 2)
    assert _final(platform, liar)[0].paras["version"] == "9.9"
    # The mute device got its query (it counts it) but never answered.
    await platform.wait_for(lambda: silent.agent.outcome.version_queries == 1)
    assert platform.events(mute) == []
