"""A device's own MQTT connection, driving a `DeviceAgent`.

IoTDA style: user name = device id; with a secret, the client id
`<device_id>_0_1_<yyyyMMddHH>` and the HMAC password of Huawei's device SDKs (sign type 1:
the broker checks the hour), computed at every (re)connect; without one, sign type 0 and
no password (a development broker that lets anyone in). `subscribe=False` sends no
SUBSCRIBE, as IoTDA SDK devices do: the broker subscribes the device itself. Uplink is
published with QoS 1 and awaited. `go_offline` disconnects for a while and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devices.agent import DeviceAgent
from devices.behaviour import WELL_BEHAVED, Behaviour
from devices.http import HttpClient
from ota.backoff import Backoff
from ota.clock import now_ms
from ota.device_auth import credentials_for
from ota.mqtt import Ack, LinkConfig, MqttLink, SessionLostError
from ota.protocol import down_topic


def iotda_client_id(device_id: str, epoch_s: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d%H", time.gmtime(time.time() if epoch_s is None else epoch_s))
    return f"{device_id}_0_0_{stamp}"


@dataclass(frozen=True)
class DeviceAccess:
    """How a device proves who it is and reaches the broker."""

    secret: str | None = field(default=None, repr=False)
    subscribe: bool = True  # False: rely on the broker's server-side subscription
    tls: ssl.SSLContext | None = field(default=None, repr=False)


OPEN_ACCESS = DeviceAccess()


class DeviceConnection:
    def __init__(
        self,
        device_id: str,
        host: str,
        port: int,
        http: HttpClient,
        behaviour: Behaviour = WELL_BEHAVED,
        *,
        download_dir: Path | None = None,
        backoff: Backoff | None = None,
        on_state: Callable[[bool], None] | None = None,
        access: DeviceAccess = OPEN_ACCESS,
    ) -> None:
        self.device_id = device_id
        self._access = access
        self._host, self._port = host, port
        self._backoff = backoff or Backoff(0.2, 5.0)
        self._on_state = on_state
        self.agent = DeviceAgent(
            device_id,
            self._publish,
            http,
            behaviour,
            go_offline=self.go_offline,
            download_dir=download_dir,
        )
        self._link: MqttLink | None = None

    def _new_link(self) -> MqttLink:
        access = self._access
        client_id, password = iotda_client_id(self.device_id), None
        if access.secret is not None:
            sent = credentials_for(self.device_id, access.secret, now_ms())
            client_id, password = sent.client_id, sent.password
        config = LinkConfig(
            host=self._host,
            port=self._port,
            client_id=client_id,
            username=self.device_id,
            password=password,
            keepalive_s=self.agent.behaviour.keepalive_s,
            max_publishes_in_flight=10,
            backoff=self._backoff,
            tls=access.tls,
        )
        return MqttLink(
            config,
            [(down_topic(self.device_id), 1)] if access.subscribe else [],
            on_message_acked=self._on_message,
            on_state=self._on_state,
        )

    def _on_message(self, _topic: str, payload: bytes, _qos: int, ack: Ack) -> None:
        self.agent.on_downlink(payload)  # spawns the agent's work: acknowledge at once
        ack(0)

    async def start(self) -> None:
        """Connect (after the scripted offline time), subscribe, and boot the agent."""
        if self.agent.behaviour.offline_for_s:
            await asyncio.sleep(self.agent.behaviour.offline_for_s)
        await self._online()

    async def _online(self) -> None:
        self._link = self._new_link()
        await self._link.connect()
        await self._link.subscribed.wait()
        await self.agent.boot()

    async def _publish(self, topic: str, payload: bytes) -> None:
        while True:
            link = self._link
            if link is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await link.publish_acked(topic, payload)
                return
            except SessionLostError:
                continue  # reconnected without the session: send again

    async def go_offline(self, seconds: float) -> None:
        if self._link is not None:
            link, self._link = self._link, None
            await link.close()
        await asyncio.sleep(seconds)
        await self._online()

    async def stop(self) -> None:
        await self.agent.close()
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close()
            self._link = None
