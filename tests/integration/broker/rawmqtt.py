"""A minimal MQTT 3.1.1 client on asyncio streams, for what gmqtt hides from a test.

It shows the CONNACK return code and the SUBACK grant as numbers, sends nothing unless
told (so a test can go silent to trip the broker's keepalive), and can drop its socket
without a DISCONNECT. Only what the broker tests use: CONNECT, SUBSCRIBE, PUBLISH QoS 0/1
(acknowledging received QoS 1), reading until the broker closes the connection.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ota.backoff import Backoff, retry

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT = 1, 2, 3, 4, 8, 9, 14
# MQTT 3.1.1 CONNACK return codes
ACCEPTED, SERVER_UNAVAILABLE, BAD_USER_NAME_OR_PASSWORD, NOT_AUTHORIZED = 0, 3, 4, 5
SUBACK_FAILURE = 0x80


def _field(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _remaining_length(len(body)) + body


def connect_packet(
    client_id: str, username: str | None, password: str | None, keepalive_s: int
) -> bytes:
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s)
    body += _field(client_id.encode())
    if username is not None:
        body += _field(username.encode())
    if password is not None:
        body += _field(password.encode())
    return _packet(CONNECT, 0, body)


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes


class RawClient:
    """One connection; `await RawClient.open(...)` then `connect()`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._next_id = 1

    @classmethod
    async def open(cls, host: str, port: int, tls: ssl.SSLContext | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        return cls(reader, writer)

    async def read_packet(self, timeout_s: float = 10.0) -> Packet | None:
        """The next packet, or None once the broker closed the connection."""
        async with asyncio.timeout(timeout_s):
            try:
                header = await self.reader.readexactly(1)
                length, shift = 0, 0
                while True:
                    byte = (await self.reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await self.reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
        return Packet(header[0] >> 4, header[0] & 0x0F, body)

    async def connect(
        self,
        client_id: str,
        username: str | None,
        password: str | None,
        keepalive_s: int = 60,
    ) -> int:
        """Sends CONNECT; the CONNACK return code (-1 if the broker just closed)."""
        self.writer.write(connect_packet(client_id, username, password, keepalive_s))
        await self.writer.drain()
        packet = await self.read_packet()
        if packet is None:
            return -1
        assert packet.kind == CONNACK, packet
        return packet.body[1]

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def send_subscribe(self, topic: str, qos: int = 1) -> None:
        """Sends a SUBSCRIBE and returns without reading anything."""
        body = struct.pack("!H", self._packet_id()) + _field(topic.encode()) + bytes([qos])
        self.writer.write(_packet(SUBSCRIBE, 0x02, body))
        await self.writer.drain()

    async def subscribe(self, topic: str, qos: int = 1) -> int:
        """The SUBACK's grant: the QoS, or 0x80 for a refusal."""
        await self.send_subscribe(topic, qos)
        packet = await self.read_packet()
        assert packet is not None, "the broker closed the connection"
        assert packet.kind == SUBACK, packet
        return packet.body[2]

    async def send_publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Sends a PUBLISH and returns without reading anything."""
        body = _field(topic.encode())
        if qos:
            body += struct.pack("!H", self._packet_id())
        self.writer.write(_packet(PUBLISH, qos << 1, body + payload))
        await self.writer.drain()

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """QoS 1 waits for the PUBACK."""
        await self.send_publish(topic, payload, qos)
        if qos:
            packet = await self.read_packet()
            assert packet is not None, "the broker closed the connection"
            assert packet.kind == PUBACK, packet

    async def receive(self, timeout_s: float = 10.0) -> tuple[str, bytes]:
        """The next PUBLISH (acknowledged if QoS 1) as (topic, payload)."""
        while True:
            packet = await self.read_packet(timeout_s)
            assert packet is not None, "the broker closed the connection"
            if packet.kind != PUBLISH:
                continue
            (size,) = struct.unpack("!H", packet.body[:2])
            topic = packet.body[2 : 2 + size].decode()
            rest = packet.body[2 + size :]
            if (packet.flags >> 1) & 0x03:
                self.writer.write(_packet(PUBACK, 0, rest[:2]))
                await self.writer.drain()
                rest = rest[2:]
            return topic, rest

    async def closed_by_broker(self, timeout_s: float) -> None:
        """Returns once the broker closed the connection; fails after the timeout."""
        while await self.read_packet(timeout_s) is not None:
            pass
        self.abort()

    async def disconnect(self) -> None:
        self.writer.write(_packet(DISCONNECT, 0, b""))
        await self.writer.drain()
        self.abort()

    def abort(self) -> None:
        """Drops the socket with no DISCONNECT, as a device losing power would."""
        self.writer.transport.abort()


# What a device does on "server unavailable" (the broker could not check its credentials
# in time: a loaded control plane or store): connect again after a pause.
DEVICE_RECONNECT = Backoff(0.5, 2.0, attempts=4)


class _UnavailableError(Exception):
    """CONNACK 3 on one attempt."""


async def connect_as_device(
    open_client: Callable[[], Awaitable[RawClient]],
    client_id: str,
    username: str | None,
    password: str | None,
) -> tuple[int, RawClient | None]:
    """CONNECT on a fresh connection, again after SERVER_UNAVAILABLE as a device would
    (DEVICE_RECONNECT): the last return code, and the client when accepted (a refused
    one is dropped, never left open)."""

    async def attempt() -> tuple[int, RawClient | None]:
        client = await open_client()
        code = await client.connect(client_id, username, password)
        if code == ACCEPTED:
            return code, client
        client.abort()
        if code == SERVER_UNAVAILABLE:
            raise _UnavailableError
        return code, None

    try:
        return await retry(
            "tests.device_connect", attempt, on=_UnavailableError, policy=DEVICE_RECONNECT
        )
    except _UnavailableError:
        return SERVER_UNAVAILABLE, None


async def connack(port: int, client_id: str, user: str | None, password: str | None) -> int:
    """The CONNACK return code one bare CONNECT gets on 127.0.0.1:`port`."""
    client = await RawClient.open("127.0.0.1", port)
    try:
        return await client.connect(client_id, user, password)
    finally:
        client.abort()
