"""ota.mqtt's additions to gmqtt, without a broker: reconnect delays from the backoff
policy that grow through an outage, PUBACK failure reason codes reaching the waiter, and
packet ids freed by a new session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from ota.backoff import Backoff
from ota.mqtt import LinkConfig, MqttLink, PublishRefusedError, SessionLostError

PUBACK = 0x40


def _link(backoff: Backoff) -> MqttLink:
    return MqttLink(LinkConfig(host="127.0.0.1", port=1, client_id="t", backoff=backoff))


async def test_reconnect_delay_grows_per_attempt_and_resets_once_connected() -> None:
    link = _link(Backoff(0.2, 1.0, rand=lambda: 1.0))
    delays = [link.client.next_reconnect_delay() for _ in range(5)]
    assert delays == [0.2, 0.4, 0.8, 1.0, 1.0]
    link._connected(link.client, 0, 0, {})
    assert link.client.next_reconnect_delay() == 0.2


async def test_reconnect_stops_when_the_policy_gives_up() -> None:
    link = _link(Backoff(0.2, 1.0, attempts=2, rand=lambda: 1.0))
    assert [link.client.next_reconnect_delay() for _ in range(3)] == [0.2, 0.4, None]


async def test_gmqtt_sleeps_the_policy_delay_before_each_attempt() -> None:
    link = _link(Backoff(0.2, 10.0, rand=lambda: 0.5))
    await link.client.reconnect(delay=True)  # not active: gmqtt returns before connecting
    await link.client.reconnect(delay=True)
    assert link.client.reconnect_delay == 0.2  # attempt 1: 0.5 * min(10, 0.2 * 2)


def _stored(link: MqttLink, mid: int) -> asyncio.Future[None]:
    link._storage.push_message(mid, b"raw")
    return link._storage.wait_for(mid)


async def test_refused_puback_fails_the_publish_with_its_reason_code() -> None:
    link = MqttLink(LinkConfig(host="127.0.0.1", port=1, client_id="t", refusals_raise=True))
    handler = link.client._package_handler
    refused, accepted, no_subscribers = _stored(link, 5), _stored(link, 6), _stored(link, 7)
    handler._handle_puback_packet(PUBACK, b"\x00\x05\x87")  # not authorised
    handler._handle_puback_packet(PUBACK, b"\x00\x06")  # v3-style: no reason code
    handler._handle_puback_packet(PUBACK, b"\x00\x07\x10")  # no matching subscribers: success
    with pytest.raises(PublishRefusedError) as caught:
        await refused
    assert caught.value.reason_code == 0x87
    await accepted  # resolved without an error
    await no_subscribers
    assert accepted.done()
    assert no_subscribers.done()


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


class _Connection:
    def __init__(self) -> None:
        self._transport = _Transport()


async def test_pubacks_of_one_pass_go_out_in_one_write_and_stale_ones_not_at_all() -> None:
    link = _link(Backoff())
    old, new = _Connection(), _Connection()
    link.client._connection = new
    link._puback(new, 1, 0)
    link._puback(new, 0x1234, 0)
    link._puback(new, 7, 0x80)  # a failure code travels in the long form
    link._puback(old, 9, 0)  # acknowledged after its connection dropped: not sent
    await asyncio.sleep(0)
    assert new._transport.writes == [
        b"\x40\x02\x00\x01" + b"\x40\x02\x12\x34" + b"\x40\x03\x00\x07\x80"
    ]
    assert old._transport.writes == []


def test_pubacks_reach_the_socket_under_uvloop() -> None:
    # uvloop's transports are no asyncio.Transport subclasses: the link must still find
    # the transport, or no PUBACK would ever be written and the broker would stop sending.
    async def scenario() -> bytes:
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await received.put(await reader.readexactly(8))
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, "127.0.0.1", port
        )
        link = _link(Backoff())
        connection = _Connection()
        connection._transport = transport  # type: ignore[assignment]
        link.client._connection = connection
        link._puback(connection, 1, 0)
        link._puback(connection, 2, 0)
        data = await asyncio.wait_for(received.get(), 5)
        transport.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)  # let the closed transports finish
        return data

    assert uvloop.run(scenario()) == b"\x40\x02\x00\x01\x40\x02\x00\x02"


async def test_without_refusals_raise_any_puback_counts_as_delivered() -> None:
    link = _link(Backoff())  # the devices' links: behaviour as before
    refused = _stored(link, 5)
    link.client._package_handler._handle_puback_packet(PUBACK, b"\x00\x05\x87")
    await refused
    assert refused.done()


async def test_pubacks_without_a_usable_transport_are_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Unwritten PUBACKs stall the broker at the receive maximum: that must not be silent.
    link = _link(Backoff())
    connection = _Connection()
    connection._transport = object()  # type: ignore[assignment]
    link.client._connection = connection
    for mid in (1, 2):
        link._puback(connection, mid, 0)
        await asyncio.sleep(0)
    errors = [r for r in caplog.records if "cannot write PUBACKs" in r.getMessage()]
    assert len(errors) == 1


async def test_a_publish_between_connections_raises_session_lost() -> None:
    link = _link(Backoff(0.2, 1.0))
    link.connected.set()  # stale: the connection object is already gone (never made here)
    with pytest.raises(SessionLostError, match="connection is gone"):
        await link.publish_acked("t/down", b"{}")


async def test_a_new_session_frees_the_packet_ids_left_in_flight() -> None:
    """A CONNACK without a session drops what was in flight (its waiters fail, as a session
    lost): its packet ids are free again, so broker restarts with publishes in flight do not
    use up the ids the broker's Receive Maximum allows."""
    link = _link(Backoff(0.2, 1.0))
    ids = link.client._package_handler.id_generator
    ids._max = 10  # as a broker's CONNACK Receive Maximum of 10 sets it
    for _restart in range(3):
        waiters = [_stored(link, ids.next_id()) for _ in range(9)]  # every id in flight
        with pytest.raises(OverflowError):
            ids.next_id()
        link.client._clear_resend_qos_queue()  # what gmqtt does on a CONNACK without session
        for waiter in waiters:
            with pytest.raises(SessionLostError):
                await waiter
    assert ids.next_id() > 0


def _publish(topic: bytes, mid: int | None, payload: bytes, props: bytes = b"\x00") -> bytes:
    """The variable header and payload of a PUBLISH (MQTT 5): topic, packet id (QoS > 0),
    properties."""
    packet_id = b"" if mid is None else mid.to_bytes(2, "big")
    return len(topic).to_bytes(2, "big") + topic + packet_id + props + payload


async def test_the_acked_handler_gets_every_publish_shape_and_acks_qos_1() -> None:
    """Plain QoS 1 publishes (no properties) take the link's own reading; the rest go
    through gmqtt's. The handler sees the same in both cases."""
    got: list[tuple[str | bytes, bytes, int, Callable[[int], None]]] = []
    link = MqttLink(
        LinkConfig(host="127.0.0.1", port=1, client_id="t", ack_after_handler=True),
        on_message_acked=lambda topic, payload, qos, ack: got.append((topic, payload, qos, ack)),
    )
    connection = _Connection()
    link.client._connection = connection
    packets = link.client._package_handler
    general: list[bytes] = []
    parse = packets._parse_properties

    def parse_properties(packet: bytes) -> object:
        general.append(packet)
        return parse(packet)

    packets._parse_properties = parse_properties
    up = "$oc/devices/d-1/sys/events/up"
    packets._handle_packet(0x32, _publish(up.encode(), 0x1234, b'{"services":[]}'))
    packets._handle_packet(0x3A, _publish(b"t/dup", 2, b""))  # dup flag, empty payload
    assert general == []  # both read by the link itself
    alias = b"\x03\x23\x00\x01"  # properties: a topic alias (gmqtt's reading)
    packets._handle_packet(0x32, _publish(b"t/alias", 7, b"x", alias))
    packets._handle_packet(0x30, _publish(b"t/qos0", None, b"y"))
    packets._handle_packet(0x32, _publish(b"t/\xff", 9, b"z"))  # not UTF-8: gmqtt's
    assert len(general) == 3
    assert [(t, p, q) for t, p, q, _ in got] == [
        (up, b'{"services":[]}', 1),
        ("t/dup", b"", 1),
        ("t/alias", b"x", 1),
        ("t/qos0", b"y", 0),
        (b"t/\xff", b"z", 1),  # as gmqtt hands it on
    ]
    for *_, ack in got:
        ack(0)
    await asyncio.sleep(0)  # one loop pass: the PUBACKs' flush is scheduled with call_soon
    assert connection._transport.writes == [
        b"\x40\x02\x12\x34" + b"\x40\x02\x00\x02" + b"\x40\x02\x00\x07" + b"\x40\x02\x00\x09"
    ]
