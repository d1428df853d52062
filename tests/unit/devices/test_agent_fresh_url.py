"""The reference agent across an expired download token: a 410 is reported as download
progress and the download waits for the fresh URL the platform sends (the same command
again, or a new one); it then continues with Range from the byte it had, never from 0.
A download that failed keeps what it received for the next command of the same package."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from devices.agent import DeviceAgent
from devices.behaviour import Behaviour
from devices.http import HttpClient
from ota.protocol import Event, parse_uplink

CONTENT = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(CONTENT).hexdigest()
URL = "https://edge.example/packages/sha256/" + SHA
CUT = 4096
CHUNK = 1024


class _Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self._body = status, headers, body

    async def chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._body), CHUNK):
            yield self._body[start : start + CHUNK]


class _Edge:
    """Serves the package to the tokens it holds valid, answers 410 to any other (they
    all expired here), and records each request: (token, Range header or None)."""

    def __init__(self, valid: set[str]) -> None:
        self.valid = valid
        self.requests: list[tuple[str, str | None]] = []

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_Response]:
        bearer = headers.get("Authorization", "").removeprefix("Bearer ")
        token = bearer or parse_qs(urlsplit(url).query)["token"][0]
        ranged = headers.get("Range")
        self.requests.append((token, ranged))
        if token not in self.valid:
            yield _Response(410, {}, b"")
            return
        etag = {"etag": f'"{SHA}"'}
        if ranged is None:
            yield _Response(200, etag, CONTENT)
            return
        start = int(ranged.removeprefix("bytes=").rstrip("-"))
        span = f"bytes {start}-{len(CONTENT) - 1}/{len(CONTENT)}"
        yield _Response(206, {**etag, "content-range": span}, CONTENT[start:])


def command(event_id: str, token: str, *, v2: bool = False, sha: str = SHA) -> bytes:
    paras: dict[str, Any] = {
        "version": "2.0",
        "file_size": len(CONTENT),
        "file_name": "fw.bin",
        "sign": sha,
    }
    if v2:
        paras["url"] = f"{URL}?token={token}"
    else:
        paras.update(url=URL, access_token=token)
    kind = "firmware_upgrade_v2" if v2 else "firmware_upgrade"
    service = {"service_id": "$ota", "event_type": kind, "event_id": event_id}
    return orjson.dumps({"object_device_id": "dev-1", "services": [{**service, "paras": paras}]})


class _Device:
    """An agent on a fake link: its reports, decoded, as they are published."""

    def __init__(
        self,
        edge: _Edge,
        behaviour: Behaviour,
        expire: str | None = None,
        resent_while_away: bytes | None = None,
    ) -> None:
        self.reports: list[Event] = []
        self.published = asyncio.Event()

        async def publish(topic: str, payload: bytes) -> None:
            self.reports.extend(parse_uplink(topic, payload).events)
            self.published.set()

        async def go_offline(seconds: float) -> None:
            # Away past the token's lifetime: it has expired when the device is back.
            edge.valid.discard(expire or "")
            if resent_while_away is not None:
                self.agent.on_downlink(resent_while_away)

        self.agent = DeviceAgent(
            "dev-1", publish, cast(HttpClient, edge), behaviour, go_offline=go_offline
        )

    async def report(self, description: str) -> Event:
        """The first report whose description starts so, once it is published."""
        while True:
            found = [r for r in self.reports if r.paras["description"].startswith(description)]
            if found:
                return found[0]
            self.published.clear()
            await asyncio.wait_for(self.published.wait(), 5)

    def finals(self) -> list[Event]:
        return [r for r in self.reports if r.paras.get("progress") == 100]


def away_mid_download(**knobs: Any) -> Behaviour:
    return Behaviour(drop_download_at=CUT, offline_mid_download_s=0.01, **knobs)


@pytest.mark.parametrize("v2", [False, True])
async def test_the_repeated_command_s_fresh_url_continues_the_download(v2: bool) -> None:
    edge = _Edge({"t1", "t2"})
    device = _Device(edge, away_mid_download(), expire="t1")
    device.agent.on_downlink(command("c1", "t1", v2=v2))
    waiting = await device.report("downloading: the download token expired")
    assert (waiting.paras["result_code"], waiting.event_id) == (0, "c1")
    assert 0 < waiting.paras["progress"] < 100
    device.agent.on_downlink(command("c1", "t2", v2=v2))  # the platform's resend, same id
    await asyncio.wait_for(device.agent.finished.wait(), 5)
    await device.agent.close()
    assert edge.requests == [("t1", None), ("t1", f"bytes={CUT}-"), ("t2", f"bytes={CUT}-")]
    [final] = device.finals()
    assert (final.paras["result_code"], final.paras["version"], final.event_id) == (0, "2.0", "c1")
    outcome = device.agent.outcome
    assert (outcome.expired_tokens, outcome.resumed_from, outcome.resumed_downloads) == (
        1,
        [CUT],
        1,
    )
    assert outcome.upgrade_commands == 1  # the repeat was not acted on as a command


async def test_with_no_fresh_url_it_fails_and_the_next_command_continues_the_partial() -> None:
    edge = _Edge({"t1", "t3"})
    device = _Device(edge, away_mid_download(fresh_url_wait_s=0.05), expire="t1")
    device.agent.on_downlink(command("c1", "t1"))
    await asyncio.wait_for(device.agent.finished.wait(), 5)
    [failed] = device.finals()
    assert (failed.paras["result_code"], failed.event_id) == (6, "c1")
    # The next try: a new command for the same package goes on from where it stopped.
    device.agent.finished.clear()
    device.agent.on_downlink(command("c2", "t3"))
    while len(device.finals()) < 2:
        device.published.clear()
        await asyncio.wait_for(device.published.wait(), 5)
    await device.agent.close()
    assert edge.requests[-1] == ("t3", f"bytes={CUT}-")
    assert ("t3", None) not in edge.requests  # never from byte 0 again
    done = device.finals()[-1]
    assert (done.paras["result_code"], done.paras["version"], done.event_id) == (0, "2.0", "c2")
    assert device.agent.outcome.resumed_from == [CUT]
    # Its first report for the new command says how far the kept download had got.
    started = next(r for r in device.reports if r.event_id == "c2")
    assert started.paras["progress"] == CUT * 100 // len(CONTENT) * 90 // 100


async def test_a_command_for_another_package_starts_from_byte_zero() -> None:
    edge = _Edge({"t1", "t3"})
    device = _Device(edge, away_mid_download(fresh_url_wait_s=0.05), expire="t1")
    device.agent.on_downlink(command("c1", "t1"))
    await asyncio.wait_for(device.agent.finished.wait(), 5)
    other = "cd" * 32  # its bytes are CONTENT too, so its hash check fails: code 7
    device.agent.on_downlink(command("c2", "t3", sha=other))
    while len(device.finals()) < 2:
        device.published.clear()
        await asyncio.wait_for(device.published.wait(), 5)
    await device.agent.close()
    assert edge.requests[-2:] == [("t3", None), ("t3", f"bytes={CUT}-")]  # its own cut
    assert device.finals()[-1].paras["result_code"] == 7


async def test_a_fresh_url_while_the_download_runs_is_used_by_its_next_request() -> None:
    """The platform renewed the token before the edge refused it (the device reported
    progress near the expiry): the resumed request goes with the fresh one at once."""
    edge = _Edge({"t1", "t2"})
    device = _Device(edge, away_mid_download(), "t1", resent_while_away=command("c1", "t2"))
    device.agent.on_downlink(command("c1", "t1"))
    await asyncio.wait_for(device.agent.finished.wait(), 5)
    await device.agent.close()
    assert edge.requests == [("t1", None), ("t2", f"bytes={CUT}-")]
    assert device.agent.outcome.expired_tokens == 0
