"""The reference agent's post-install health check (`Behaviour.after_install`): after the
result of a successful upgrade it reports its verdict unprompted and keeps it in every
later version report, or boots back into its old version and reports that; without the
knob it sends no verdict at all, as an IoTDA device does."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import orjson
import pytest

from devices.agent import DeviceAgent
from devices.behaviour import AfterInstall, Behaviour
from devices.fleet import outcome_of
from devices.http import HttpClient
from ota.protocol import Event, parse_uplink

CONTENT = b"firmware 2.0" * 100
SHA = hashlib.sha256(CONTENT).hexdigest()
UP = "$oc/devices/dev-1/sys/events/up"


class _Response:
    status, headers = 200, {"etag": f'"{SHA}"'}

    async def chunks(self) -> AsyncIterator[bytes]:
        yield CONTENT


class _Http:
    """Serves the package to every GET."""

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_Response]:
        yield _Response()


def _command(event_type: str, event_id: str, paras: dict[str, Any]) -> bytes:
    service = {"service_id": "$ota", "event_type": event_type, "event_id": event_id}
    return orjson.dumps({"object_device_id": "dev-1", "services": [{**service, "paras": paras}]})


UPGRADE = _command(
    "firmware_upgrade",
    "c1",
    {
        "version": "2.0",
        "url": "https://edge.example/packages/sha256/" + SHA,
        "file_size": len(CONTENT),
        "file_name": "fw.bin",
        "sign": SHA,
    },
)


class Device:
    def __init__(self, after: AfterInstall | None) -> None:
        self.sent: list[Event] = []
        self.published = asyncio.Event()
        behaviour = Behaviour(progress_every_pct=0, after_install=after)
        self.agent = DeviceAgent("dev-1", self.publish, cast(HttpClient, _Http()), behaviour)

    async def publish(self, topic: str, payload: bytes) -> None:
        self.sent.extend(parse_uplink(topic, payload).events)
        self.published.set()

    async def upgraded(self) -> list[Event]:
        """What the device sent for the upgrade, once it is done with it."""
        self.agent.on_downlink(UPGRADE)
        await self.agent.finished.wait()
        return list(self.sent)

    async def answer_query(self) -> dict[str, Any]:
        before = len(self.sent)
        self.agent.on_downlink(_command("version_query", "q1", {}))
        while len(self.sent) == before:
            self.published.clear()
            await self.published.wait()
        await self.agent.close()
        [answer] = self.sent[before:]
        assert answer.event_type == "version_report"
        return dict(answer.paras)


@pytest.mark.parametrize(
    ("after", "last", "outcome"),
    [
        (AfterInstall.CONFIRM, {"fw_version": "2.0", "health_check": "passed"}, "confirmed"),
        (
            AfterInstall.FAIL_CHECK,
            {"fw_version": "2.0", "health_check": "failed"},
            "health_check_failed",
        ),
        (AfterInstall.BOOT_OLD, {"fw_version": "1.0"}, "rolled_back"),
    ],
)
async def test_after_the_result_the_device_reports_its_verdict_or_its_old_version(
    after: AfterInstall, last: dict[str, Any], outcome: str
) -> None:
    device = Device(after)
    sent = await device.upgraded()
    result, verdict = sent[-2], sent[-1]
    assert (result.event_type, result.paras["result_code"], result.paras["version"]) == (
        "upgrade_progress_report",
        0,
        "2.0",
    )
    assert verdict.event_type == "version_report"
    assert {**verdict.paras, "sw_version": None} == {**last, "sw_version": None}
    assert device.agent.fw_version == last["fw_version"]
    assert outcome_of(device.agent) == outcome
    # A later version query is answered with the same verdict (or none after the boot).
    assert await device.answer_query() == {**verdict.paras}


async def test_an_iotda_device_sends_no_verdict() -> None:
    device = Device(None)
    sent = await device.upgraded()
    assert sent[-1].event_type == "upgrade_progress_report"
    assert all("health_check" not in e.paras for e in sent)
    assert "health_check" not in await device.answer_query()
    assert outcome_of(device.agent) == "succeeded"
