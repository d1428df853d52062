"""The uplink handler's contract, with a scripted stand-in for the Kafka bridge:
PUBACK (ack) only after every record was acknowledged, retries in arrival order with
intake held, dead letters for records Kafka refuses for good, and reading pauses at the
in-flight bound."""

from __future__ import annotations

import asyncio

import orjson

from gateway.inbound import Inbound
from gateway.presence import OtaBrokerSource
from gateway.settings import GatewaySettings
from ota.backoff import Backoff
from ota.kafka_async import OnDone
from ota.kafka_errors import KafkaClientError
from ota.metrics import REGISTRY
from ota.protocol import up_topic
from ota.records import DeadLetterRecord, DeviceEventRecord, PresenceRecord, decode
from ota.runtime import Runtime

TIMEOUT = KafkaClientError("KafkaTimeoutError: no answer", retriable=True, name="KafkaTimeoutError")
TOO_LARGE = KafkaClientError(
    "MessageSizeTooLargeError: too large", retriable=False, name="MessageSizeTooLargeError"
)


class ScriptedProducer:
    """Records what was sent; the test answers each record in its own time."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.answers: list[OnDone] = []
        self.renewals = 0

    async def renew(self) -> None:
        self.renewals += 1

    def produce(self, topic: str, key: bytes | None, value: bytes, on_done: OnDone) -> None:
        self.sent.append((topic, key, value))
        self.answers.append(on_done)

    def answer(self, index: int, error: KafkaClientError | None = None) -> None:
        self.answers[index](error)


class Acks:
    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def for_(self, name: str) -> object:
        return lambda code: self.codes.__setitem__(name, code)


def _inbound(
    producer: ScriptedProducer, limit: int, calls: list[str], rt: Runtime | None = None
) -> Inbound:
    """An Inbound with its recovery task supervised by `rt` (a fresh runtime if None)."""
    settings = GatewaySettings.from_env(
        {"OTA_GATEWAY_UPLINK_IN_FLIGHT": str(limit), "OTA_GATEWAY_PRESENCE_SOURCE": "ota"}
    )
    inbound = Inbound(
        settings,
        producer,  # type: ignore[arg-type]
        None,
        pause_reading=lambda: calls.append("pause"),
        resume_reading=lambda: calls.append("resume"),
        backoff=Backoff(0.001, 0.001),
    )
    runtime = rt if rt is not None else Runtime()
    runtime.spawn(inbound.recovery(runtime.stop), "uplink-recovery")
    return inbound


def _payload(event_id: str | None = None) -> bytes:
    event: dict[str, object] = {"service_id": "$ota", "event_type": "version_report", "paras": {}}
    if event_id is not None:
        event["event_id"] = event_id
    return orjson.dumps({"services": [event]})


PAYLOAD = _payload()


async def _until(condition: object, rounds: int = 200) -> None:
    for _ in range(rounds):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


async def test_acknowledges_only_after_kafka_acknowledged() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 10, calls)
    inbound.receive(up_topic("d1"), PAYLOAD, 1, acks.for_("m"))  # type: ignore[arg-type]
    assert [decode(v).kind for _, _, v in producer.sent] == ["device_event", "presence"]
    producer.answer(0)
    assert acks.codes == {}
    producer.answer(1)
    assert acks.codes == {"m": 0}
    assert inbound.idle.is_set()


async def test_failed_records_are_sent_again_with_the_same_id() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 10, calls)
    inbound.receive(up_topic("d1"), PAYLOAD, 1, acks.for_("m"))  # type: ignore[arg-type]
    producer.answer(0, TIMEOUT)
    producer.answer(1)
    await _until(lambda: len(producer.sent) == 3)
    assert acks.codes == {}
    assert producer.sent[2] == producer.sent[0]  # only the failed record, unchanged
    producer.answer(2)
    assert acks.codes == {"m": 0}


async def test_retry_keeps_arrival_order_and_holds_intake() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 100, calls)
    for n in range(3):
        inbound.receive(up_topic("d1"), _payload(f"e{n}"), 1, acks.for_(f"m{n}"))  # type: ignore[arg-type]
    # Records: e0 + presence, e1, e2. e0 and e1 time out, answered in reverse order.
    producer.answer(3)
    producer.answer(2, TIMEOUT)
    producer.answer(0, TIMEOUT)
    assert calls == ["pause"]  # intake stops at the first failure
    inbound.receive(up_topic("d1"), _payload("e3"), 1, acks.for_("m3"))  # type: ignore[arg-type]
    assert len(producer.sent) == 4  # e3 is held, not sent
    producer.answer(1)
    await _until(lambda: len(producer.sent) == 6)
    retried = [decode(v) for _, _, v in producer.sent[4:]]
    assert [r.device_event_id for r in retried if isinstance(r, DeviceEventRecord)] == ["e0", "e1"]
    assert len(producer.sent) == 6  # e3 waits until the retried records are through
    producer.answer(4)
    producer.answer(5)
    await _until(lambda: len(producer.sent) == 7)
    last = decode(producer.sent[6][2])
    assert isinstance(last, DeviceEventRecord)
    assert last.device_event_id == "e3"
    assert calls == ["pause", "resume"]
    producer.answer(6)
    assert acks.codes == {"m0": 0, "m1": 0, "m2": 0, "m3": 0}


async def test_record_refused_for_good_is_dead_lettered_then_acknowledged() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 10, calls)
    inbound.receive(up_topic("d1"), PAYLOAD, 1, acks.for_("m"))  # type: ignore[arg-type]
    producer.answer(1)
    producer.answer(0, TOO_LARGE)
    assert calls == ["pause"]
    # The producer is renewed and the record sent again alone: refused again, it is the
    # culprit; the producer is renewed once more and its dead letter sent.
    await _until(lambda: len(producer.sent) == 3)
    assert producer.renewals == 1
    assert producer.sent[2] == producer.sent[0]
    producer.answer(2, TOO_LARGE)
    await _until(lambda: len(producer.sent) == 4)
    assert producer.renewals == 2
    topic, key, value = producer.sent[3]
    letter = decode(value)
    assert topic.endswith("dead-letters")
    assert key == b"gateway"
    assert isinstance(letter, DeadLetterRecord)
    assert letter.reason == "kafka_refused"
    assert "MessageSizeTooLargeError" in letter.message
    assert letter.origin == up_topic("d1")
    assert letter.key == "d1"
    assert DeadLetterRecord.raw_bytes(PAYLOAD) == letter.raw_b64
    assert acks.codes == {}
    producer.answer(3)
    await _until(lambda: acks.codes == {"m": 0})
    assert calls == ["pause", "resume"]


async def test_records_failed_beside_a_refused_one_are_delivered_not_dead_lettered() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 10, calls)
    inbound.receive(up_topic("d1"), _payload("big"), 1, acks.for_("m0"))  # type: ignore[arg-type]
    inbound.receive(up_topic("d1"), _payload("ok"), 1, acks.for_("m1"))  # type: ignore[arg-type]
    for index in range(3):  # the idempotent producer fails them all with the one error
        producer.answer(index, TOO_LARGE)
    await _until(lambda: len(producer.sent) == 4)
    producer.answer(3, TOO_LARGE)  # big, alone: the culprit
    await _until(lambda: len(producer.sent) == 5)
    assert isinstance(decode(producer.sent[4][2]), DeadLetterRecord)
    producer.answer(4)
    await _until(lambda: len(producer.sent) == 6)  # presence of m0, alone
    assert producer.sent[5] == producer.sent[1]
    producer.answer(5)
    await _until(lambda: len(producer.sent) == 7)  # ok, alone
    assert producer.sent[6] == producer.sent[2]
    producer.answer(6)
    await _until(lambda: acks.codes == {"m0": 0, "m1": 0})
    assert producer.renewals == 2


async def test_refused_dead_letter_is_dropped_and_acknowledged() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 10, calls)
    inbound.receive(up_topic("d1"), b"not json", 1, acks.for_("m"))  # type: ignore[arg-type]
    assert len(producer.sent) == 1
    producer.answer(0, TOO_LARGE)
    await _until(lambda: len(producer.sent) == 2)
    producer.answer(1, TOO_LARGE)
    await _until(lambda: acks.codes == {"m": 0})
    assert len(producer.sent) == 2
    assert producer.renewals == 2


async def test_reading_pauses_at_the_bound_and_resumes_at_half() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 4, calls)
    for n in range(4):
        inbound.receive(up_topic(f"d{n}"), PAYLOAD, 1, acks.for_(f"m{n}"))  # type: ignore[arg-type]
    assert calls == ["pause"]
    assert inbound.in_flight == 4
    for index in range(4):  # two devices' records
        producer.answer(index)
    assert calls == ["pause", "resume"]
    for index in range(4, 8):
        producer.answer(index)
    assert acks.codes == {"m0": 0, "m1": 0, "m2": 0, "m3": 0}


async def test_foreign_slot_is_acknowledged_without_kafka() -> None:
    producer, acks = ScriptedProducer(), Acks()
    settings = GatewaySettings.from_env({"OTA_GATEWAY_REPLICAS": "2", "OTA_GATEWAY_INDEX": "0"})
    inbound = Inbound(settings, producer, None, lambda: None, lambda: None)  # type: ignore[arg-type]
    # crc32("devA") % 2 == 1: another replica's device.
    inbound.receive(up_topic("devA"), PAYLOAD, 1, acks.for_("m"))  # type: ignore[arg-type]
    assert acks.codes == {"m": 0}
    assert producer.sent == []


class _BrokenPresence:
    """A presence parser with a defect: it raises on every notice."""

    name = "broken"
    topic_filter = "$ota/presence/+"

    def parse(self, topic: str, payload: bytes) -> None:
        raise RuntimeError("parser defect")


async def test_a_translation_defect_is_dead_lettered_and_leaves_the_window() -> None:
    producer, acks = ScriptedProducer(), Acks()
    settings = GatewaySettings.from_env({"OTA_GATEWAY_UPLINK_IN_FLIGHT": "2"})
    inbound = Inbound(settings, producer, _BrokenPresence(), lambda: None, lambda: None)  # type: ignore[arg-type]
    inbound.receive("$ota/presence/dev-1", b"{}", 1, acks.for_("m"))  # type: ignore[arg-type]
    [(topic, _, value)] = producer.sent
    letter = decode(value)
    assert topic == settings.common.topics.dead_letters
    assert isinstance(letter, DeadLetterRecord)
    assert letter.reason == "gateway_error"
    assert "parser defect" in letter.message
    assert acks.codes == {}
    producer.answer(0)
    assert acks.codes == {"m": 0}
    assert inbound.in_flight == 0
    assert inbound.idle.is_set()


async def test_in_flight_gauge_follows_the_window() -> None:
    producer, acks = ScriptedProducer(), Acks()
    inbound = _inbound(producer, 10, [])
    gauge = ("ota_gateway_in_flight", {"direction": "uplink"})
    inbound.receive(up_topic("d1"), PAYLOAD, 1, acks.for_("a"))  # type: ignore[arg-type]
    inbound.receive(up_topic("d2"), b"{not json", 1, acks.for_("b"))  # type: ignore[arg-type]
    assert REGISTRY.get_sample_value(*gauge) == 2
    for index in range(len(producer.sent)):
        producer.answer(index)
    assert acks.codes == {"a": 0, "b": 0}
    assert REGISTRY.get_sample_value(*gauge) == 0


async def test_sdk_system_events_are_counted_never_dead_lettered() -> None:
    producer, acks = ScriptedProducer(), Acks()
    inbound = _inbound(producer, 10, [])
    sample = (
        "ota_gateway_system_events_ignored_total",
        {"service": "$log", "event_type": "log_report"},
    )
    before = REGISTRY.get_sample_value(*sample) or 0.0
    log = {"service_id": "$log", "event_type": "log_report", "paras": {"content": "connected"}}
    inbound.receive(up_topic("d1"), orjson.dumps({"services": [log]}), 1, acks.for_("m"))  # type: ignore[arg-type]
    # Only the presence it proves: no device event, no dead letter.
    assert [decode(v).kind for _, _, v in producer.sent] == ["presence"]
    assert REGISTRY.get_sample_value(*sample) == before + 1
    producer.answer(0)
    assert acks.codes == {"m": 0}


def _retries(operation: str) -> float:
    return REGISTRY.get_sample_value("ota_retries_total", {"operation": operation}) or 0.0


async def test_produce_retries_are_counted_by_the_shared_helper() -> None:
    producer, calls, acks = ScriptedProducer(), list[str](), Acks()
    inbound = _inbound(producer, 10, calls)
    before = _retries("gateway.produce")
    inbound.receive(up_topic("d1"), PAYLOAD, 1, acks.for_("m"))  # type: ignore[arg-type]
    producer.answer(1)
    producer.answer(0, TIMEOUT)
    await _until(lambda: len(producer.sent) == 3)
    producer.answer(2, TIMEOUT)  # refused again: a second retry
    await _until(lambda: len(producer.sent) == 4)
    assert _retries("gateway.produce") == before + 2
    producer.answer(3)
    await _until(lambda: calls == ["pause", "resume"])
    assert acks.codes == {"m": 0}


class _RenewFails(ScriptedProducer):
    async def renew(self) -> None:
        raise RuntimeError("renewal defect")


async def test_a_failing_recovery_stops_the_service_instead_of_leaving_intake_paused() -> None:
    producer, calls, acks = _RenewFails(), list[str](), Acks()
    rt = Runtime()
    inbound = _inbound(producer, 10, calls, rt)
    inbound.receive(up_topic("d1"), PAYLOAD, 1, acks.for_("m"))  # type: ignore[arg-type]
    producer.answer(1)
    producer.answer(0, TOO_LARGE)  # not retriable: recovery renews the producer, which raises
    await asyncio.wait_for(rt.failed.wait(), 5)
    assert isinstance(rt.failure, RuntimeError)
    assert str(rt.failure) == "renewal defect"
    assert rt.stop.is_set()  # the service stops (exit 1 under `run`)
    assert calls == ["pause"]
    assert acks.codes == {}  # never acknowledged: the broker redelivers after the restart


async def test_recovery_returns_on_stop() -> None:
    settings = GatewaySettings.from_env({})
    inbound = Inbound(settings, ScriptedProducer(), None, lambda: None, lambda: None)  # type: ignore[arg-type]
    rt = Runtime()
    task = rt.spawn(inbound.recovery(rt.stop), "uplink-recovery")
    await asyncio.sleep(0)  # the task is waiting for trouble
    rt.stop.set()
    await asyncio.wait_for(task, 1)
    assert rt.failure is None


def _presence(device_id: str, held: bool) -> bytes:
    return orjson.dumps(
        {
            "device_id": device_id,
            "client_id": f"{device_id}_0_0_2026120615",
            "online": True,
            "at_ms": 1_765_000_000_123,
            "reason": "connect",
            "held": held,
        }
    )


async def test_another_slots_presence_is_forwarded_only_when_held() -> None:
    producer, acks = ScriptedProducer(), Acks()
    settings = GatewaySettings.from_env({"OTA_GATEWAY_REPLICAS": "2", "OTA_GATEWAY_INDEX": "0"})
    inbound = Inbound(settings, producer, OtaBrokerSource(), lambda: None, lambda: None)  # type: ignore[arg-type]
    # crc32("devA") % 2 == 1: another replica's device. Live, that replica writes it.
    inbound.receive("$ota/presence/devA", _presence("devA", held=False), 1, acks.for_("live"))  # type: ignore[arg-type]
    assert acks.codes == {"live": 0}
    assert producer.sent == []
    # Released after a hold, it may have reached this replica only: written here.
    inbound.receive("$ota/presence/devA", _presence("devA", held=True), 1, acks.for_("held"))  # type: ignore[arg-type]
    [(_, key, value)] = producer.sent
    record = decode(value)
    assert isinstance(record, PresenceRecord)
    assert (key, record.device_id, record.online, record.source) == (
        b"devA",
        "devA",
        True,
        "broker",
    )
    assert "held" not in acks.codes  # the PUBACK waits for Kafka
    producer.answer(0)
    assert acks.codes == {"live": 0, "held": 0}
