"""The fleet simulator: many reference agents in one process, for load and end-to-end tests.

Two modes:
- `connections`: one MQTT connection per device on the device listener, exactly as real
  devices connect (presence comes from the broker's connect notices). Raises the
  open-file limit; about 28,000 connections fit one loopback source address.
- `multiplexed`: a few platform-listener connections publish on behalf of many device ids
  (presence then comes from each device's first uplink, its boot version_report), and one
  wildcard subscription to `$oc/devices/+/sys/events/down` routes commands to the agents.
  Mosquitto delivers a matching message once per subscribing connection, so only one
  connection subscribes. A fleet split over several processes (`first`, `own_downlinks`)
  subscribes to each of its devices' down topics instead, to receive only its own.

As a library: `async with Fleet(config) as fleet: ...; fleet.report()`. As a command, with
a mix of device kinds: `python -m ops.demo_fleet --help`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import resource
import ssl
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

from devices.agent import DeviceAgent, Publish
from devices.behaviour import WELL_BEHAVED, AfterInstall, Behaviour
from devices.connection import DeviceAccess, DeviceConnection
from devices.http import HttpClient
from devices.report import FleetReport, histogram, summarize
from ota.catalog import RESULT_ALREADY_LATEST, RESULT_SUCCESS
from ota.mqtt import Ack, LinkConfig, MqttLink, SessionLostError
from ota.protocol import ProtocolError, device_id_from_topic, down_topic
from ota.settings import CommonSettings


class Mode(StrEnum):
    CONNECTIONS = "connections"
    MULTIPLEXED = "multiplexed"


BehaviourOf = Callable[[int, str], Behaviour]


def download_tls_of(settings: CommonSettings) -> ssl.SSLContext | None:
    """What devices verify https downloads with: OTA_DOWNLOAD_CA_FILE, else the system's CAs."""
    if settings.download_ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(settings.download_ca_file))


@dataclass(frozen=True)
class FleetConfig:
    size: int
    mode: Mode = Mode.CONNECTIONS
    prefix: str = "sim"
    host: str = "127.0.0.1"
    device_port: int = 1883
    platform_port: int = 1884
    platform_user: str = "ota-platform"
    platform_password: str = field(default="ota-platform-secret", repr=False)
    mux_connections: int = 4
    connects_in_parallel: int = 200
    behaviour_of: BehaviourOf = field(default=lambda _index, _device: WELL_BEHAVED)
    download_slots: int = 2048  # downloads in flight at once; the rest wait
    first: int = 0  # index of the first device: a slice of a fleet split over processes
    # Multiplexed: subscribe to each device's down topic instead of the wildcard, so that
    # processes sharing the broker each receive only their own devices' commands.
    own_downlinks: bool = False
    # Connections mode: each device's secret (None: no password, for an open development
    # listener), whether devices SUBSCRIBE themselves (IoTDA devices do not: the broker
    # subscribes them), and TLS for the device listener (8883).
    secret_of: Callable[[str], str] | None = field(default=None, repr=False)
    subscribe: bool = True
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    # Downloads over https verify the edge against this context (the system's CAs if None).
    download_tls: ssl.SSLContext | None = field(default=None, repr=False)
    # Connections mode: called with the device ids before any connects, to register their
    # secrets where the broker checks them (the API's bulk import, or the store directly).
    register: Callable[[list[str]], Awaitable[object]] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: CommonSettings, size: int, **overrides: object) -> FleetConfig:
        """A fleet of IoTDA-built devices on the stack's broker: secrets derived from
        `DEFAULT_SEED` (register them first: `fleet_credentials`), no SUBSCRIBE."""
        base = cls(
            size=size,
            host=settings.mqtt_host,
            device_port=settings.mqtt_device_port,
            platform_port=settings.mqtt_platform_port,
            platform_user=settings.mqtt_platform_user,
            platform_password=settings.mqtt_platform_password,
            secret_of=seeded_secrets(DEFAULT_SEED),
            subscribe=False,
            download_tls=download_tls_of(settings),
        )
        return FleetConfig(**{**base.__dict__, **overrides})

    def device_ids(self) -> list[str]:
        return [device_name(self.prefix, n) for n in self.indexes()]

    def indexes(self) -> range:
        return range(self.first, self.first + self.size)


def device_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:07d}"


# Simulated fleets derive their secrets from this; a real fleet's secrets are its own.
DEFAULT_SEED = "ota-simulated-fleet"


def derived_secret(seed: str, device_id: str) -> str:
    """A simulated device's secret, derived from the fleet's seed so that the process
    that registers the fleet and the processes that run it agree without sharing a file."""
    return hmac.new(seed.encode(), device_id.encode(), hashlib.sha256).hexdigest()[:32]


def seeded_secrets(seed: str) -> Callable[[str], str]:
    return functools.partial(derived_secret, seed)


def fleet_credentials(device_ids: list[str], seed: str = DEFAULT_SEED) -> bytes:
    """The bulk-import body (`POST /v1/credentials/import`) registering these devices."""
    return "".join(f"{d},{derived_secret(seed, d)}\n" for d in device_ids).encode()


def outcome_of(agent: DeviceAgent) -> str:
    """One word per device: succeeded, already_latest, failed_<code>, wrong_version,
    installed_silently, in_progress (commanded, no final result yet) or idle; after a
    health check (`Behaviour.after_install`) confirmed, health_check_failed or rolled_back."""
    outcome = agent.outcome
    if outcome.result_code is None:
        if outcome.finished_at is not None:
            return "installed_silently"  # switched version without reporting a result
        return "in_progress" if outcome.upgrade_commands else "idle"
    if outcome.result_code == RESULT_ALREADY_LATEST:
        return "already_latest"
    if outcome.result_code != RESULT_SUCCESS:
        return f"failed_{outcome.result_code}"
    if agent.behaviour.wrong_version is not None:
        return "wrong_version"
    if outcome.health is not None:
        return _HEALTH_OUTCOMES[outcome.health]
    return "succeeded"


_HEALTH_OUTCOMES = {
    AfterInstall.CONFIRM: "confirmed",
    AfterInstall.FAIL_CHECK: "health_check_failed",
    AfterInstall.BOOT_OLD: "rolled_back",
}


def raise_file_limit(wanted: int) -> int:
    """Raise the soft open-file limit towards `wanted` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.agents: dict[str, DeviceAgent] = {}
        self._connections: list[DeviceConnection] = []
        self._links: list[MqttLink] = []
        self._http: HttpClient | None = None
        self._online = 0
        self._late_starts: list[asyncio.Task[None]] = []
        self._not_yet_online: set[str] = set()  # multiplexed: scripted to come later

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def online(self) -> int:
        return self._online

    async def start(self) -> None:
        self._http = HttpClient(
            slots=self.config.download_slots, ssl_context=self.config.download_tls
        )
        if self.config.mode is Mode.CONNECTIONS:
            await self._start_connections()
        else:
            await self._start_multiplexed()

    # ------------------------------------------------------------ one connection per device

    async def _start_connections(self) -> None:
        assert self._http is not None
        raise_file_limit(self.config.size + 1024)
        if self.config.register is not None:
            await self.config.register(self.config.device_ids())
        gate = asyncio.Semaphore(self.config.connects_in_parallel)

        def on_state(up: bool) -> None:
            self._online += 1 if up else -1

        async def start_one(connection: DeviceConnection) -> None:
            async with gate:
                await connection.start()

        later: list[asyncio.Task[None]] = []
        starts = []
        for index, device_id in zip(self.config.indexes(), self.config.device_ids(), strict=True):
            behaviour = self.config.behaviour_of(index, device_id)
            secret_of = self.config.secret_of
            access = DeviceAccess(
                secret=None if secret_of is None else secret_of(device_id),
                subscribe=self.config.subscribe,
                tls=self.config.tls,
            )
            connection = DeviceConnection(
                device_id,
                self.config.host,
                self.config.device_port,
                self._http,
                behaviour,
                on_state=on_state,
                access=access,
            )
            self._connections.append(connection)
            self.agents[device_id] = connection.agent
            if behaviour.offline_for_s:
                later.append(asyncio.create_task(connection.start()))
            else:
                starts.append(start_one(connection))
        await asyncio.gather(*starts)
        self._late_starts = later

    # ------------------------------------------------------------ multiplexed

    async def _start_multiplexed(self) -> None:
        assert self._http is not None
        config = self.config
        downlinks = [("$oc/devices/+/sys/events/down", 1)]
        if config.own_downlinks:
            downlinks = [(down_topic(device_id), 1) for device_id in config.device_ids()]
        for n in range(max(1, config.mux_connections)):
            link = MqttLink(
                LinkConfig(
                    host=config.host,
                    port=config.platform_port,
                    client_id=f"ota-sim-{config.prefix}-{config.first}-{n}",
                    username=config.platform_user,
                    password=config.platform_password,
                    max_publishes_in_flight=500,
                ),
                downlinks if n == 0 else [],
                on_message_acked=self._route if n == 0 else None,
            )
            await link.connect()
            self._links.append(link)
        await self._links[0].subscribed.wait()
        boots = []
        for index, device_id in zip(config.indexes(), config.device_ids(), strict=True):
            link = self._links[zlib.crc32(device_id.encode()) % len(self._links)]
            agent = DeviceAgent(
                device_id,
                self._mux_publisher(link),
                self._http,
                config.behaviour_of(index, device_id),
                go_offline=asyncio.sleep,
            )
            self.agents[device_id] = agent
            if agent.behaviour.offline_for_s:  # comes online later: do not wait for it
                self._not_yet_online.add(device_id)
                self._late_starts.append(asyncio.create_task(self._boot_later(agent)))
            else:
                boots.append(self._boot_later(agent))
        await asyncio.gather(*boots)

    async def _boot_later(self, agent: DeviceAgent) -> None:
        if agent.behaviour.offline_for_s:
            await asyncio.sleep(agent.behaviour.offline_for_s)
            self._not_yet_online.discard(agent.device_id)
        await agent.boot()
        self._online += 1

    @staticmethod
    def _mux_publisher(link: MqttLink) -> Publish:
        async def publish(topic: str, payload: bytes) -> None:
            while True:
                try:
                    await link.publish_acked(topic, payload)
                    return
                except SessionLostError:
                    continue

        return publish

    def _route(self, topic: str, payload: bytes, _qos: int, ack: Ack) -> None:
        # Called in the read loop, no task per message; the agent spawns its own work.
        try:
            device_id = device_id_from_topic(topic, "down")
        except ProtocolError:
            device_id = ""
        agent = self.agents.get(device_id)
        if agent is not None and device_id not in self._not_yet_online:
            agent.on_downlink(payload)  # an offline device would not receive it
        ack(0)

    # ------------------------------------------------------------ results

    def report(self) -> FleetReport:
        outcomes = Counter(outcome_of(agent) for agent in self.agents.values())
        durations = [
            d
            for agent in self.agents.values()
            if (d := agent.outcome.duration_s) is not None and outcome_of(agent) == "succeeded"
        ]
        return FleetReport(
            self.config.size,
            self._online,
            dict(sorted(outcomes.items())),
            summarize(durations),
            histogram(durations),
        )

    async def wait_until(self, predicate: Callable[[Fleet], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    def finished(self) -> int:
        return sum(1 for agent in self.agents.values() if agent.outcome.result_code is not None)

    async def stop(self) -> None:
        for task in self._late_starts:
            task.cancel()
        for agent in self.agents.values():
            await agent.close()
        gate = asyncio.Semaphore(500)

        async def stop_one(connection: DeviceConnection) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    await connection.stop()

        await asyncio.gather(*(stop_one(c) for c in self._connections))
        for link in self._links:
            await link.close()
        self._online = 0
