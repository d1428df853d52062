"""A command the broker refuses (PUBACK reason >= 0x80) is not counted as published: it
is dead-lettered with the code (and its offset may move on), or retried when the code
says "later" (quota exceeded)."""

from __future__ import annotations

import asyncio

from gateway.outbound import Outbound
from ota.backoff import Backoff
from ota.metrics import REGISTRY
from ota.mqtt import PublishRefusedError
from ota.records import CommandRecord, DeadLetterRecord, decode, encode


class RefusingLink:
    def __init__(self, codes: list[int]) -> None:
        self.codes = codes  # refusal codes to answer with, in turn; then accepted
        self.published: list[str] = []

    async def publish_acked(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.published.append(topic)
        if self.codes:
            raise PublishRefusedError(self.codes.pop(0))


class LetterBox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _outbound(link: RefusingLink, letters: LetterBox) -> Outbound:
    return Outbound(
        lambda: None,
        "ota.commands",
        link,  # type: ignore[arg-type]
        letters,  # type: ignore[arg-type]
        "ota.dead-letters",
        10,
        backoff=Backoff(0.001, 0.001),
    )


COMMAND = encode(CommandRecord(device_id="d1", event_type="version_query", paras={}, at_ms=1))


def _published(event_type: str) -> float:
    value = REGISTRY.get_sample_value("ota_gateway_messages_out_total", {"type": event_type})
    return value or 0.0


async def test_refused_command_is_dead_lettered_not_published() -> None:
    link, letters = RefusingLink([0x87]), LetterBox()
    before = _published("version_query")
    await _outbound(link, letters)._publish_one(4, 17, COMMAND)
    assert len(link.published) == 1  # not retried
    assert _published("version_query") == before
    topic, _key, value = letters.sent[0]
    letter = decode(value)
    assert topic == "ota.dead-letters"
    assert isinstance(letter, DeadLetterRecord)
    assert letter.reason == "publish_refused_0x87"
    assert letter.origin == "ota.commands/4/17"
    assert letter.raw_b64 == DeadLetterRecord.raw_bytes(COMMAND)


async def test_quota_exceeded_is_retried_until_accepted() -> None:
    link, letters = RefusingLink([0x97, 0x97]), LetterBox()
    before = _published("version_query")
    await _outbound(link, letters)._publish_one(0, 1, COMMAND)
    assert len(link.published) == 3
    assert letters.sent == []
    assert _published("version_query") == before + 1
