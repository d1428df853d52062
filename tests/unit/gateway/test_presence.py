from __future__ import annotations

from hashlib import blake2b

import orjson
import pytest

from gateway.presence import (
    Change,
    Notice,
    PresenceTracker,
    device_of_client,
    parse_emqx_event,
    parse_ota_broker_event,
)
from ota.records import MAX_CONNECTION_CHARS


@pytest.mark.parametrize(
    ("client", "user", "device"),
    [
        ("devA_0_0_2026112700", None, "devA"),
        ("dev_with_underscores_0_1_2026112700", None, "dev_with_underscores"),
        ("plain-device-7", None, "plain-device-7"),
        ("whatever-client", "devB", "devB"),
        ("devA_0_0_2026112700", "devC", "devC"),
        ("devA_0_0_20261127", None, "devA_0_0_20261127"),
        ("<unknown>", None, None),
        ("bad/id", None, None),
    ],
)
def test_device_of_client(client: str, user: str | None, device: str | None) -> None:
    assert device_of_client(client, user) == device


def test_emqx_events() -> None:
    topic = "$SYS/brokers/emqx@10.0.0.1/clients/devA_0_0_2026112700/connected"
    payload = orjson.dumps({"clientid": "devA_0_0_2026112700", "username": "devA"})
    assert parse_emqx_event(topic, payload) == Notice("devA_0_0_2026112700", True, "devA")
    gone = topic.replace("/connected", "/disconnected")
    body = orjson.dumps(
        {"clientid": "devA_0_0_2026112700", "username": "devA", "reason": "keepalive_timeout"}
    )
    assert parse_emqx_event(gone, body) == Notice(
        "devA_0_0_2026112700", False, "devA", "keepalive_timeout"
    )
    assert parse_emqx_event(gone, b"not json") == Notice("devA_0_0_2026112700", False, None, "")
    assert parse_emqx_event("$SYS/brokers/n/stats/connections/count", b"1") is None


def _tracker() -> PresenceTracker:
    return PresenceTracker(frozenset({"ota-platform"}), ("ota-",))


def test_tracker_online_then_offline() -> None:
    tracker = _tracker()
    assert tracker.apply(Notice("devA_0_0_2026112700", True, "devA")) == Change("devA", True)
    assert tracker.apply(Notice("devA_0_0_2026112700", False)) == Change("devA", False)


def test_tracker_offline_only_when_the_last_connection_goes() -> None:
    tracker = _tracker()
    assert tracker.apply(Notice("devA_0_0_2026112700", True, "devA")) == Change("devA", True)
    assert tracker.apply(Notice("devA_0_0_2026112701", True, "devA")) == Change("devA", True)
    assert tracker.apply(Notice("devA_0_0_2026112700", False)) is None
    assert tracker.apply(Notice("devA_0_0_2026112701", False)) == Change("devA", False)


def test_tracker_ignores_platform_clients() -> None:
    tracker = _tracker()
    assert tracker.apply(Notice("ota-gateway-0", True, "ota-platform")) is None
    assert tracker.apply(Notice("ota-gateway-0", False)) is None
    assert tracker.apply(Notice("ota-healthcheck-1", False)) is None


def test_tracker_disconnect_of_unknown_client_maps_its_id() -> None:
    assert _tracker().apply(Notice("devZ_0_0_2026112700", False)) == Change("devZ", False)


def test_tracker_memory_is_bounded() -> None:
    tracker = PresenceTracker(frozenset({"ota-platform"}), max_clients=2)
    for n in range(3):
        tracker.apply(Notice(f"c{n}", True, f"dev{n}"))
    # c0 was forgotten; its disconnect falls back to the client id as device id.
    assert tracker.apply(Notice("c0", False)) == Change("c0", False)
    assert tracker.apply(Notice("c2", False)) == Change("dev2", False)


def _ota_event(device: str = "devA", **over: object) -> bytes:
    body: dict[str, object] = {
        "device_id": device,
        "client_id": f"{device}_0_1_2026120519",
        "online": True,
        "at_ms": 1,
        "reason": "connect",
    }
    return orjson.dumps({**body, **over})


def test_ota_broker_events() -> None:
    notice = parse_ota_broker_event("$ota/presence/devA", _ota_event())
    assert notice == Notice(
        "devA_0_1_2026120519",
        True,
        username="devA",
        detail="connect",
        connection=connection_of(1, "devA_0_1_2026120519"),
    )
    gone = parse_ota_broker_event(
        "$ota/presence/devA", _ota_event(online=False, reason="connection_lost")
    )
    assert gone == Notice("devA_0_1_2026120519", False, username="devA", detail="connection_lost")


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("$ota/presence/devB", _ota_event()),  # the payload names another device
        ("$ota/presence/devA/x", _ota_event()),
        ("$ota/kick/devA", _ota_event()),
        ("$ota/presence/devA", b"not json"),
        ("$ota/presence/devA", b"[1]"),
        ("$ota/presence/devA", _ota_event(online="yes")),
        ("$ota/presence/devA", _ota_event(client_id=7)),
    ],
)
def test_ota_broker_events_that_are_not_notices(topic: str, payload: bytes) -> None:
    assert parse_ota_broker_event(topic, payload) is None


@pytest.mark.parametrize(
    ("held", "marked"), [(True, True), (False, False), (None, False), ("true", False), (1, False)]
)
def test_ota_broker_event_held_only_when_marked_true(held: object, marked: bool) -> None:
    notice = parse_ota_broker_event("$ota/presence/devA", _ota_event(held=held))
    assert notice is not None
    assert notice.held is marked
    assert parse_ota_broker_event("$ota/presence/devA", _ota_event()).held is False  # type: ignore[union-attr]


def connection_of(at_ms: int, client_id: str) -> str:
    return f"{at_ms}-{blake2b(client_id.encode(), digest_size=4).hexdigest()}"


@pytest.mark.parametrize(
    ("at_ms", "named"),
    [(1765000000123, True), (None, False), (0, False), (True, False), ("5", False)],
)
def test_ota_broker_online_names_its_connection_by_connect_time(at_ms: object, named: bool) -> None:
    notice = parse_ota_broker_event("$ota/presence/devA", _ota_event(at_ms=at_ms))
    assert notice is not None
    assert notice.connection == (connection_of(1765000000123, notice.client_id) if named else None)
    gone = parse_ota_broker_event("$ota/presence/devA", _ota_event(online=False, at_ms=at_ms))
    assert gone is not None
    assert gone.connection is None  # an offline notice names no connection


def test_emqx_connected_names_its_connection_by_connected_at() -> None:
    topic = "$SYS/brokers/emqx@10.0.0.1/clients/devA_0_0_2026112700/connected"
    body = {"clientid": "devA_0_0_2026112700", "username": "devA", "connected_at": 1765000000123}
    notice = parse_emqx_event(topic, orjson.dumps(body))
    assert notice is not None
    assert notice.connection == connection_of(1765000000123, "devA_0_0_2026112700")
    gone = parse_emqx_event(topic.replace("/connected", "/disconnected"), orjson.dumps(body))
    assert gone is not None
    assert gone.connection is None


def test_two_clients_connecting_in_one_millisecond_are_two_connections() -> None:
    first = parse_ota_broker_event("$ota/presence/devA", _ota_event(at_ms=5))
    other = _ota_event(at_ms=5, client_id="devA_0_1_2026120520")
    second = parse_ota_broker_event("$ota/presence/devA", other)
    assert first is not None
    assert second is not None
    assert first.connection != second.connection
    assert len(str(first.connection)) <= MAX_CONNECTION_CHARS


def test_tracker_reports_a_reconnect_of_an_online_device_with_its_new_connection() -> None:
    """A crashed broker announces no offline: the reconnect after it is still reported."""
    tracker = _tracker()
    first = Notice("devA_0_0_2026112700", True, "devA", connection="100")
    again = Notice("devA_0_0_2026112700", True, "devA", connection="200")
    assert tracker.apply(first) == Change("devA", True, "100")
    assert tracker.apply(again) == Change("devA", True, "200")
    assert tracker.apply(again) == Change("devA", True, "200")  # the worker drops repeats
    assert tracker.apply(Notice("devA_0_0_2026112700", False)) == Change("devA", False)
