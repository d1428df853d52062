"""gmqtt, made to await acknowledgements and to push back: what every MQTT user here shares.

gmqtt 0.8 publishes QoS 1 without telling when the PUBACK came; it only removes the
packet from its "persistent storage" then. `AckStorage` is that storage with a future
per packet id, so `publish_acked` can await the broker's acknowledgement, and a
session the broker did not keep fails the waiters (the caller publishes again) instead
of leaving them hanging. In-flight publishes must stay below the broker's
receive-maximum or gmqtt's id pool raises OverflowError; `MqttLink` bounds them.

With `refusals_raise`, a QoS 1 publish the broker refuses (MQTT 5 PUBACK reason code
>= 0x80, e.g. 0x87 not authorised) raises `PublishRefusedError` with the code: it was not
delivered. gmqtt ignores PUBACK reason codes, so the link reads the code itself before
gmqtt frees the id.

`on_message_acked` is the fast inbound path: a plain function called with the message
and an `ack(reason_code)` to call once the message is safely handled (PUBACK for QoS 1;
no-op for QoS 0), without a task per message; the PUBACKs of one loop pass go out in one
socket write. A QoS 1 PUBLISH without MQTT 5 properties (what the broker sends the uplink)
is read by the link straight from the packet; gmqtt reads every other. An ack for a
connection that has since dropped is not sent: the broker redelivers on the new one, whose
packet ids differ.

gmqtt reconnects by itself after a lost connection, waiting `reconnect_delay` before
every attempt; the link sets that delay from its backoff policy before each attempt, so
it grows (with jitter) through a long broker outage and resets once connected. It also
tries again after a CONNACK that refuses for now (`NOT_NOW`: server unavailable or busy,
a quota or rate exceeded, as a broker under a reconnect storm answers), also on the first
connect, which then waits for that instead of failing (unless the link's policy gives up
after some attempts: then the refusal is raised).

`pause_reading`/`resume_reading` stop and restart reading the socket, so a consumer of
messages that cannot keep up makes TCP (and then the broker) hold the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from gmqtt import Client, Message, Subscription
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.handler import MQTTConnectError
from gmqtt.storage import PersistentStorage

from ota.backoff import Backoff, StoppedError, count_retry, retry

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int], Awaitable[int]]
Ack = Callable[[int], None]
AckedHandler = Callable[[str, bytes, int, Ack], None]
REFUSED = 0x80  # MQTT 5 reason codes from here up are failures
# CONNACK refusals that say "not now" rather than "never": MQTT 3.1.1 server unavailable;
# MQTT 5 server unavailable, server busy, quota exceeded, connection rate exceeded. Device
# SDKs try again after them; so does gmqtt, by itself, and `connect` waits for that.
NOT_NOW = frozenset({0x03, 0x88, 0x89, 0x97, 0x9F})
_TRANSPORT_METHODS = ("write", "is_closing", "pause_reading", "resume_reading")


class PublishRefusedError(Exception):
    """The broker answered a publish with a failure reason code; it was not delivered."""

    def __init__(self, reason_code: int) -> None:
        super().__init__(f"the broker refused the publish (reason code 0x{reason_code:02x})")
        self.reason_code = reason_code


class SessionLostError(ConnectionError):
    """The broker started a new session: unacknowledged publishes must be sent again."""


class AckStorage(PersistentStorage):  # type: ignore[misc]
    """gmqtt's in-flight store, resolving a future when a packet id is acknowledged."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._refused: dict[int, int] = {}
        self.last_mid = 0
        self.ids: Any = None  # the client's packet id allocator (gmqtt's IdGenerator)

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def wait_for(self, mid: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[mid] = future
        return future

    def refused(self, mid: int, reason_code: int) -> None:
        """The PUBACK of `mid` carried a failure code (read before gmqtt removes the packet)."""
        self._refused[mid] = reason_code

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        reason = self._refused.pop(mid, None)
        future = self._waiters.pop(mid, None)
        if future is None or future.done():
            return
        if reason is None:
            future.set_result(None)
        else:
            future.set_exception(PublishRefusedError(reason))

    def clear(self) -> None:
        """A new session (CONNACK without one): nothing is in flight any more."""
        super().clear()
        if self.ids is not None:
            # gmqtt drops the stored packets but keeps their ids taken: every broker restart
            # would leak the window in flight until the allocator (capped by the broker's
            # Receive Maximum) has no id left and every publish raises OverflowError.
            self.ids._used_ids.clear()
        self._refused.clear()
        waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            if not future.done():
                future.set_exception(SessionLostError("the broker did not keep the session"))


class _Client(Client):  # type: ignore[misc]
    """gmqtt's client, waiting a backoff-policy delay before each reconnect attempt."""

    def __init__(self, client_id: str, backoff: Backoff, **kwargs: Any) -> None:
        super().__init__(client_id, **kwargs)
        self.backoff = backoff
        self.reconnect_attempts = 0  # since the last successful connect

    def next_reconnect_delay(self) -> float | None:
        """The wait before the next attempt, or None when the policy gives up."""
        attempt = self.reconnect_attempts
        if self.backoff.gives_up(attempt):
            return None
        self.reconnect_attempts += 1
        count_retry("mqtt.reconnect")
        return self.backoff.delay_s(attempt)

    async def reconnect(self, delay: bool = False) -> None:
        # gmqtt calls this after a lost connection and again after each failed attempt,
        # always sleeping `reconnect_delay` first: set it per attempt.
        if delay:
            wait = self.next_reconnect_delay()
            if wait is None:
                self.stop_reconnect()
                return
            self.reconnect_delay = wait
        await super().reconnect(delay=delay)


def _puback_packet(mid: int, reason_code: int) -> bytes:
    """An MQTT 5 PUBACK; success leaves the reason code out (remaining length 2)."""
    if reason_code == 0:
        return b"\x40\x02" + mid.to_bytes(2, "big")
    return b"\x40\x03" + mid.to_bytes(2, "big") + bytes((reason_code,))


def _no_ack(_reason_code: int) -> None:
    """QoS 0 messages have nothing to acknowledge."""


@dataclass(frozen=True)
class LinkConfig:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    clean_start: bool = True
    session_expiry_s: int = 0
    receive_maximum: int = 1000  # how many unacknowledged messages the broker may send us
    keepalive_s: int = 60
    ack_after_handler: bool = False  # PUBACK only when the handler returned (QoS 1 inbound)
    max_publishes_in_flight: int = 500
    backoff: Backoff = field(default_factory=lambda: Backoff(0.2, 10.0))
    # publish_acked raises PublishRefusedError on a PUBACK failure code (off: as before,
    # any PUBACK counts as delivered).
    refusals_raise: bool = False
    # Topic filters per SUBSCRIBE packet: a link subscribing to many filters (one per
    # device) sends several packets; `subscribed` is set when all are acknowledged.
    subscribe_batch: int = 1000
    # MQTT over TLS (a device on 8883 verifying the platform's CA); None: plain TCP.
    tls: ssl.SSLContext | None = field(default=None, repr=False)


class MqttLink:
    """One MQTT 5 connection: reconnecting with jittered backoff, subscriptions restored."""

    def __init__(
        self,
        config: LinkConfig,
        subscriptions: list[tuple[str, int]] = (),  # type: ignore[assignment]
        on_message: MessageHandler | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_message_acked: AckedHandler | None = None,
    ) -> None:
        self.config = config
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_message_acked = on_message_acked
        self._on_state = on_state
        self._storage = AckStorage()
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()  # set once the broker acknowledged the subscriptions
        self.session_present = False  # as the last CONNACK said
        self._subacks_due = 0
        self._slots = asyncio.Semaphore(config.max_publishes_in_flight)
        self._pubacks: list[bytes] = []
        self._pubacks_for: Any = None  # the gmqtt connection the buffered PUBACKs belong to
        self._no_transport_logged = False
        self.client = self._make_client()

    def _make_client(self) -> _Client:
        properties: dict[str, Any] = {"receive_maximum": self.config.receive_maximum}
        if self.config.session_expiry_s:
            properties["session_expiry_interval"] = self.config.session_expiry_s
        client = _Client(
            self.config.client_id,
            self.config.backoff,
            clean_session=self.config.clean_start,
            optimistic_acknowledgement=not self.config.ack_after_handler,
            persistent_storage=self._storage,
            **properties,
        )
        self._storage.ids = client._package_handler.id_generator
        if self.config.username is not None:
            client.set_auth_credentials(self.config.username, self.config.password)
        client.on_connect = self._connected
        client.on_subscribe = self._subacked
        client.on_disconnect = self._disconnected
        if self._on_message is not None:
            handler = self._on_message

            async def on_message(
                _client: Client, topic: str, payload: bytes, qos: int, _props: Any
            ) -> int:
                return await handler(topic, payload, qos)

            client.on_message = on_message
        if self._on_message_acked is not None:
            self._route_acked(client, self._on_message_acked)
        if self.config.refusals_raise:
            self._read_puback_reasons(client)
        return client

    def _route_acked(self, client: Client, handler: AckedHandler) -> None:
        # gmqtt would wrap each QoS 1 message in a task and PUBACK when it finishes; the
        # handler acknowledges by itself instead (gmqtt 0.8 dispatches QoS 1 publishes to
        # `_handle_qos_1_publish_packet(mid, payload, topic, properties)` on its handler).
        packets = client._package_handler
        if not hasattr(packets, "_handle_qos_1_publish_packet"):
            raise RuntimeError("this gmqtt version has no QoS 1 publish hook")

        def on_qos1(mid: int, payload: bytes, topic: str, _props: Any) -> None:
            connection = client._connection

            def ack(reason_code: int) -> None:
                self._puback(connection, mid, reason_code)

            handler(topic, payload, 1, ack)

        def on_qos0(_client: Client, topic: str, payload: bytes, qos: int, _props: Any) -> None:
            handler(topic, payload, qos, _no_ack)

        packets._handle_qos_1_publish_packet = on_qos1
        client.on_message = on_qos0  # QoS 0 (and 2, which this link never subscribes with)
        packets._handle_publish_packet = self._plain_publishes(client, handler)

    def _plain_publishes(
        self, client: Client, handler: AckedHandler
    ) -> Callable[[int, bytes], None]:
        # The uplink's PUBLISH packets are all alike: QoS 1, a topic, a packet id, no MQTT 5
        # properties. Those go to the handler straight from the packet; gmqtt's own reading
        # (three struct formats built per packet, a properties dict, a debug line) takes
        # every other packet, and any that is not exactly that shape.
        packets = client._package_handler
        general = packets._handle_publish_packet
        debug = packets._logger.isEnabledFor

        def on_publish(cmd: int, raw: bytes) -> None:
            # fixed header 0x3_ with QoS 1 (bits 1-2), any dup and retain flags; MQTT 5
            if (
                cmd & 0x06 == 0x02
                and len(raw) > 5
                and packets._connection_state.protocol_version >= MQTTv50
                and not debug(logging.DEBUG)
            ):
                end = 2 + (raw[0] << 8 | raw[1])  # after the topic (not empty)
                # the packet id (2 bytes), then the properties' length: 0, in one byte
                if end > 2 and len(raw) > end + 2 and raw[end + 2] == 0:
                    try:
                        topic = raw[2:end].decode()
                    except UnicodeDecodeError:
                        pass  # gmqtt logs it and hands on the bytes
                    else:
                        mid = raw[end] << 8 | raw[end + 1]
                        connection = client._connection

                        def ack(reason_code: int) -> None:
                            self._puback(connection, mid, reason_code)

                        handler(topic, raw[end + 3 :], 1, ack)
                        return
            general(cmd, raw)

        return on_publish

    def _puback(self, connection: Any, mid: int, reason_code: int) -> None:
        # PUBACKs are written together once per loop pass: one write, not one per message.
        if connection is not self.client._connection:
            return  # that connection is gone: the broker redelivers on the new one
        if self._pubacks and self._pubacks_for is not connection:
            self._flush_pubacks()
        self._pubacks_for = connection
        self._pubacks.append(_puback_packet(mid, reason_code))
        if len(self._pubacks) == 1:
            asyncio.get_running_loop().call_soon(self._flush_pubacks)

    def _flush_pubacks(self) -> None:
        if not self._pubacks:
            return
        data = b"".join(self._pubacks)
        self._pubacks.clear()
        transport = self._transport()
        current = self._pubacks_for is self.client._connection
        if current and transport is None and not self._no_transport_logged:
            # Unwritten PUBACKs stall the broker at our receive maximum: say so loudly.
            self._no_transport_logged = True
            log.error(
                "cannot write PUBACKs: the MQTT connection has no usable transport",
                extra={"client_id": self.config.client_id},
            )
        if current and transport is not None and not transport.is_closing():
            transport.write(data)

    def _read_puback_reasons(self, client: Client) -> None:
        # MQTT 5 PUBACK: packet id, then an optional reason code (absent = success).
        packets = client._package_handler
        original = packets._handle_puback_packet
        storage = self._storage

        def on_puback(cmd: int, packet: bytes) -> None:
            if len(packet) > 2 and packet[2] >= REFUSED:
                storage.refused(int.from_bytes(packet[:2], "big"), packet[2])
            original(cmd, packet)

        packets._handle_puback_packet = on_puback

    def _connected(self, _client: Client, flags: int, _rc: int, _props: Any) -> None:
        self.client.reconnect_attempts = 0
        self.session_present = bool(flags & 1)  # CONNACK: the broker kept our session
        if self._subscriptions:
            self.client.subscriptions.clear()  # gmqtt appends on every subscribe call
            step = max(1, self.config.subscribe_batch)
            batches = [
                self._subscriptions[i : i + step] for i in range(0, len(self._subscriptions), step)
            ]
            self._subacks_due = len(batches)
            for batch in batches:
                self.client.subscribe([Subscription(topic, qos=qos) for topic, qos in batch])
        else:
            self.subscribed.set()  # nothing to subscribe (the broker subscribes devices)
        self.connected.set()
        if self._on_state is not None:
            self._on_state(True)

    def _subacked(self, *_args: Any) -> None:
        self._subacks_due -= 1
        if self._subacks_due <= 0:
            self.subscribed.set()

    def _disconnected(self, _client: Client, _packet: Any, _exc: Any = None) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if self._on_state is not None:
            self._on_state(False)

    async def connect(self, stop: asyncio.Event | None = None) -> None:
        """Connect, retrying with the backoff policy until connected or `stop` is set
        (then ConnectionAbortedError); raises the last error once the policy gives up."""

        async def attempt() -> None:
            await self.client.connect(
                self.config.host,
                self.config.port,
                ssl=self.config.tls or False,
                keepalive=self.config.keepalive_s,
                version=MQTTv50,
            )

        try:
            await retry(
                "mqtt.connect",
                attempt,
                on=(TimeoutError, OSError),
                policy=self.config.backoff,
                stop=stop,
                context={"client_id": self.config.client_id},
            )
        except StoppedError as exc:
            raise ConnectionAbortedError("stopped while connecting") from exc
        except MQTTConnectError as exc:
            # A link whose policy gives up fails at once, as before: gmqtt's retries would
            # stop without a sign to wait for.
            if (
                getattr(exc, "_code", None) not in NOT_NOW
                or self.config.backoff.attempts is not None
            ):
                raise
            # gmqtt is already trying again, with the link's backoff: wait for it.
            log.info(
                "the broker refused the connect for now; trying again",
                extra={"client_id": self.config.client_id, "refusal": str(exc)},
            )
            await self._until_connected(stop)

    async def _until_connected(self, stop: asyncio.Event | None) -> None:
        """Wait for a reconnect gmqtt makes by itself (ConnectionAbortedError on `stop`)."""
        waits = {asyncio.ensure_future(self.connected.wait())}
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if not self.connected.is_set():
            raise ConnectionAbortedError("stopped while connecting")

    async def publish_acked(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1); raises SessionLostError when the
        connection or the session was lost before the broker acknowledged,
        PublishRefusedError when it answered with a failure reason code."""
        async with self._slots:
            await self.connected.wait()
            try:
                self.client.publish(Message(topic, payload, qos=qos))
            except AttributeError as gone:  # gmqtt between connections: no connection object
                raise SessionLostError("the broker connection is gone") from gone
            if qos == 0:
                return
            await self._storage.wait_for(self._storage.last_mid)

    def pause_reading(self) -> None:
        transport = self._transport()
        if transport is not None:
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _transport(self) -> asyncio.Transport | None:
        # gmqtt keeps the transport on its connection object (0.8: `_transport`). uvloop's
        # transports are not asyncio.Transport subclasses, so check what is used instead.
        connection = getattr(self.client, "_connection", None)
        transport = getattr(connection, "_transport", None)
        if all(hasattr(transport, name) for name in _TRANSPORT_METHODS):
            return cast(asyncio.Transport, transport)
        return None

    async def close(self) -> None:
        self.connected.clear()
        # OSError/AttributeError: never connected, or the socket is already gone.
        with contextlib.suppress(OSError, AttributeError):
            await self.client.disconnect()
