"""Device presence from broker notices: pure parsers and the client -> device bookkeeping.

Two broker dialects feed one `Notice` type:
- The project's own broker (HiveMQ CE with deploy/broker's extension, docs/broker.md)
  publishes JSON on `$ota/presence/<device_id>`: `{"device_id", "client_id", "online",
  "at_ms", "reason", "held"}`, for authenticated devices only; `held` is true on an event
  the broker held while no platform client was subscribed and released later.
- EMQX publishes JSON client events on `$SYS/brokers/<node>/clients/<clientid>/connected`
  and `.../disconnected`.

A connect notice names its connection: `<connect time>-<client hash>`, the broker's
connect time in epoch milliseconds (`at_ms` of the extension's online event, EMQX's
`connected_at`) and 8 hex digits of BLAKE2b over the client id (two clients of one device
may connect within one millisecond). It is compared for equality only (the time comes
from the broker's clock): the same value again is a duplicate notice, another value a new
connection, also when no disconnect was seen (a broker that crashed announces no offline,
only the reconnects after it returns).

`PresenceTracker` turns notices into device online/offline changes: the user name (the
device id on the device listener) wins over the client id; IoTDA client ids
`<device_id>_0_0_<timestamp>` and plain ids both map to a device; the platform's own
clients never count; a device is online while it has at least one connection.
No I/O lives here.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from hashlib import blake2b
from typing import Protocol

import orjson

from ota.protocol import ProtocolError, check_device_id


@dataclass(frozen=True, slots=True)
class Notice:
    """One connect or disconnect of an MQTT client, as the broker reported it."""

    client_id: str
    online: bool
    username: str | None = None
    detail: str = ""  # why a client went away: "disconnected", "exceeded timeout", ...
    connection: str | None = None  # a connect's identity (see the module docstring)
    held: bool = False  # released after a hold: forwarded by any replica (gateway.slots)


@dataclass(frozen=True, slots=True)
class Change:
    """A device came online or went offline."""

    device_id: str
    online: bool
    connection: str | None = None  # the connection an online change announces


class PresenceSource(Protocol):
    """Where a broker publishes its client notices, and how to read them."""

    @property
    def name(self) -> str: ...

    @property
    def topic_filter(self) -> str: ...

    def parse(self, topic: str, payload: bytes) -> Notice | None: ...


# ---------------------------------------------------------------- EMQX

_EMQX_TOPIC = re.compile(
    r"\$SYS/brokers/[^/]+/clients/(?P<client>[^/]+)/(?P<what>connected|disconnected)"
)


def parse_emqx_event(topic: str, payload: bytes) -> Notice | None:
    """The notice in an EMQX client event, or None for any other `$SYS` message."""
    match = _EMQX_TOPIC.fullmatch(topic)
    if not match:
        return None
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    client = body.get("clientid")
    username = body.get("username")
    reason = body.get("reason")
    online = match["what"] == "connected"
    client_id = client if isinstance(client, str) and client else match["client"]
    return Notice(
        client_id=client_id,
        online=online,
        username=username if isinstance(username, str) and username else None,
        detail=reason if isinstance(reason, str) else "",
        connection=_connection(body.get("connected_at"), client_id) if online else None,
    )


@dataclass(frozen=True)
class EmqxEventSource:
    """EMQX's client connected/disconnected events."""

    name: str = "emqx"
    topic_filter: str = "$SYS/brokers/+/clients/+/+"

    def parse(self, topic: str, payload: bytes) -> Notice | None:
        return parse_emqx_event(topic, payload)


# ---------------------------------------------------------------- the project's broker

_OTA_TOPIC = re.compile(r"\$ota/presence/(?P<device>[^/]+)")


def parse_ota_broker_event(topic: str, payload: bytes) -> Notice | None:
    """The notice in a presence event of the project's broker extension, or None.

    The topic names the device the broker authenticated; the payload must agree with it
    (only the platform account may publish there, but a mismatch is still no notice).
    """
    match = _OTA_TOPIC.fullmatch(topic)
    if not match:
        return None
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    device, client, online = body.get("device_id"), body.get("client_id"), body.get("online")
    if device != match["device"] or not isinstance(client, str) or not isinstance(online, bool):
        return None
    reason = body.get("reason")
    return Notice(
        client,
        online,
        username=device,
        detail=reason if isinstance(reason, str) else "",
        connection=_connection(body.get("at_ms"), client) if online else None,
        held=body.get("held") is True,
    )


def _connection(connected_ms: object, client_id: str) -> str | None:
    """A connection's identity (module docstring), or None when the time is unusable."""
    if not isinstance(connected_ms, int) or isinstance(connected_ms, bool) or connected_ms <= 0:
        return None
    return f"{connected_ms}-{blake2b(client_id.encode(), digest_size=4).hexdigest()}"


@dataclass(frozen=True)
class OtaBrokerSource:
    """Presence events of the project's broker extension."""

    name: str = "ota"
    topic_filter: str = "$ota/presence/+"

    def parse(self, topic: str, payload: bytes) -> Notice | None:
        return parse_ota_broker_event(topic, payload)


SOURCES: dict[str, PresenceSource] = {
    "ota": OtaBrokerSource(),
    "emqx": EmqxEventSource(),
}


# ---------------------------------------------------------------- client -> device

_IOTDA_CLIENT_ID = re.compile(r"(?P<device>.+)_0_[0-9]_[0-9]{10}")


def device_of_client(client_id: str, username: str | None) -> str | None:
    """The device a client stands for: its user name, else the IoTDA client id's device part,
    else the client id itself; None when that is not a valid device id."""
    if username:
        candidate = username
    else:
        match = _IOTDA_CLIENT_ID.fullmatch(client_id)
        candidate = match["device"] if match else client_id
    try:
        return check_device_id(candidate)
    except ProtocolError:
        return None


class PresenceTracker:
    """Which clients each device has open, so a device is offline only when its last one goes.

    Platform clients (by user name, or by client id prefix when a disconnect names no user)
    are ignored. The memory of client ids is bounded; a forgotten client's disconnect falls
    back to the client id mapping.
    """

    def __init__(
        self,
        platform_users: frozenset[str],
        platform_client_prefixes: tuple[str, ...] = ("ota-",),
        max_clients: int = 1_000_000,
    ) -> None:
        self._platform_users = platform_users
        self._platform_prefixes = platform_client_prefixes
        self._max_clients = max_clients
        self._device_of: OrderedDict[str, str] = OrderedDict()
        self._clients_of: dict[str, set[str]] = {}

    def apply(self, notice: Notice) -> Change | None:
        """The device change a notice makes, or None when it changes nothing."""
        if notice.online:
            return self._connected(notice)
        return self._disconnected(notice)

    def _is_platform(self, notice: Notice) -> bool:
        if notice.username is not None:
            return notice.username in self._platform_users
        return notice.client_id.startswith(self._platform_prefixes)

    def _connected(self, notice: Notice) -> Change | None:
        if self._is_platform(notice):
            return None
        device = device_of_client(notice.client_id, notice.username)
        if device is None:
            return None
        previous = self._device_of.pop(notice.client_id, None)
        if previous is not None and previous != device:
            self._forget(notice.client_id, previous)
        self._device_of[notice.client_id] = device
        clients = self._clients_of.setdefault(device, set())
        clients.add(notice.client_id)
        while len(self._device_of) > self._max_clients:
            old_client, old_device = self._device_of.popitem(last=False)
            self._forget(old_client, old_device)
        # Reported on every connect: a reconnect after an unseen drop is news too, and the
        # connection lets the worker tell it from a repeated notice.
        return Change(device, online=True, connection=notice.connection)

    def _disconnected(self, notice: Notice) -> Change | None:
        device = self._device_of.pop(notice.client_id, None)
        if device is None:
            if self._is_platform(notice):
                return None
            device = device_of_client(notice.client_id, None)
            if device is None:
                return None
        else:
            self._forget(notice.client_id, device)
        if self._clients_of.get(device):
            return None  # another connection of the device is still open
        return Change(device, online=False)

    def _forget(self, client_id: str, device: str) -> None:
        clients = self._clients_of.get(device)
        if clients is None:
            return
        clients.discard(client_id)
        if not clients:
            del self._clients_of[device]
