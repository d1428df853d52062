"""A device set to stall its download says the download started and never asks for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import cast

import orjson

from devices.agent import DeviceAgent
from devices.behaviour import Behaviour
from devices.http import HttpClient
from ota.protocol import parse_uplink

SHA = "ab" * 32


class _Http:
    """Counts the GETs; a stalled download must make none."""

    def __init__(self) -> None:
        self.gets = 0

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[None]:
        self.gets += 1
        yield None


def command() -> bytes:
    paras = {
        "version": "2.0",
        "url": "https://edge.example/packages/sha256/" + SHA,
        "file_size": 1000,
        "file_name": "fw.bin",
        "sign": SHA,
    }
    service = {"service_id": "$ota", "event_type": "firmware_upgrade", "event_id": "c1"}
    return orjson.dumps({"object_device_id": "dev-1", "services": [{**service, "paras": paras}]})


async def test_a_stalled_download_is_announced_and_never_fetched() -> None:
    reported = asyncio.Event()
    sent: list[bytes] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append(payload)
        reported.set()

    http = _Http()
    behaviour = Behaviour(stall_download=True, progress_every_pct=0)
    agent = DeviceAgent("dev-1", publish, cast(HttpClient, http), behaviour)
    agent.on_downlink(command())
    await reported.wait()
    for _ in range(10):  # let the agent's task run on as far as it would go
        await asyncio.sleep(0)
    await agent.close()
    [report] = parse_uplink("$oc/devices/dev-1/sys/events/up", sent[0]).events
    assert (report.paras["result_code"], report.paras["progress"]) == (0, 0)
    assert report.paras["description"] == "downloading"
    assert len(sent) == 1
    assert http.gets == 0
    assert not agent.finished.is_set()
