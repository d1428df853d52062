"""The reference agent's reports leave in order without holding up its work: while its
link is down (the broker restarting) a download runs to its end, and the progress reports
queued meanwhile go out, in order and before the result, once the link is back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import cast

import orjson

from devices.agent import DeviceAgent
from devices.behaviour import Behaviour
from devices.http import HttpClient
from ota.protocol import parse_uplink

CONTENT = bytes(range(256)) * 40
SHA = hashlib.sha256(CONTENT).hexdigest()
CHUNK = 1024


class _Response:
    status, headers = 200, {"etag": f'"{SHA}"'}

    def __init__(self, http: _Http) -> None:
        self._http = http

    async def chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(CONTENT), CHUNK):
            yield CONTENT[start : start + CHUNK]
        self._http.served.set()


class _Http:
    """Serves the package in chunks; `served` once the last byte went out."""

    def __init__(self) -> None:
        self.served = asyncio.Event()

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_Response]:
        yield _Response(self)


def command() -> bytes:
    paras = {
        "version": "2.0",
        "url": "https://edge.example/packages/sha256/" + SHA,
        "file_size": len(CONTENT),
        "file_name": "fw.bin",
        "sign": SHA,
    }
    service = {"service_id": "$ota", "event_type": "firmware_upgrade", "event_id": "c1"}
    return orjson.dumps({"object_device_id": "dev-1", "services": [{**service, "paras": paras}]})


async def test_a_download_goes_on_while_reports_wait_for_the_link() -> None:
    link_up = asyncio.Event()
    sent: list[bytes] = []

    async def publish(topic: str, payload: bytes) -> None:
        await link_up.wait()
        sent.append(payload)

    http = _Http()
    agent = DeviceAgent("dev-1", publish, cast(HttpClient, http), Behaviour(progress_every_pct=10))
    agent.on_downlink(command())
    await asyncio.wait_for(http.served.wait(), 5)  # the whole package, no report sent yet
    assert sent == []
    link_up.set()
    await asyncio.wait_for(agent.finished.wait(), 5)
    await agent.close()
    reports = [parse_uplink("$oc/devices/dev-1/sys/events/up", p).events[0].paras for p in sent]
    progress = [r["progress"] for r in reports]
    assert progress == sorted(progress)
    assert progress[0] == 0
    assert len(progress) > 3  # download progress queued while the link was down
    assert (reports[-1]["progress"], reports[-1]["result_code"]) == (100, 0)
    assert reports[-1]["version"] == "2.0"
