"""The device broker killed with SIGKILL and started again on the same ports: it announces
no offline, its devices reconnect, and the version query lost with the old connection
reaches the device again, whether the device reconnects after the gateway subscribed again
or before (its notice then held by the broker until the gateway subscribes); a device whose
result was lost in the crash is asked its version on reconnect and its job succeeds, also
when the crash kept it away until its window ran out (the gateway records the outage and
the sweeper holds the deadline until the device is back). A private broker, gateway and
worker on the real Kafka and Redis (database 15); the stack's broker is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from workerkit import SHORT, TARGET, Inbox, ThreadWorker, make_settings, worker_redis

from ota.clock import now_ms
from ota.metrics import REGISTRY
from ota.protocol import encode_envelope, up_topic, uplink_event
from ota.records import DownloadPhase, JobEventRecord, PresenceRecord
from ota.reports import VersionReport
from ota.settings import Topics
from tests.conftest import missing
from tests.integration.broker.authserver import AuthServer, iotda_hour, iotda_password
from tests.integration.broker.broker_support import (
    BrokerProcess,
    broker_lib,
    restart_same_ports,
    start_broker,
)
from tests.integration.broker.rawmqtt import CONNACK, RawClient, connect_as_device, connect_packet
from tests.integration.gateway.conftest import KafkaReader, Stack, running_gateway
from tests.waiting import wait_until

AUTH_KEY = "test-crash-key"
SCRATCH_DB = 15
ACCEPTED = 0


@pytest.fixture
def lib() -> Path:
    found = broker_lib()
    if not (found / "ota-broker.jar").is_file() or shutil.which("java") is None:
        missing(f"no broker build in {found} or no java; run deploy/local/up")
    return found


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    made = Topics.with_prefix(f"t-{uuid.uuid4().hex[:10]}.")
    names = [made.inbox, made.commands, made.job_events, made.dead_letters]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="ota-tests-crash")
    admin.create_topics([NewTopic(n, 2, 1) for n in names], timeout_ms=30_000)
    try:
        yield made
    finally:
        admin.delete_topics(names, timeout_ms=30_000)
        admin.close()


class Fleet:
    """Devices the in-process authentication server accepts."""

    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth

    def add(self) -> tuple[str, str]:
        device_id, secret = f"dev-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        self.auth.add_device(device_id, secret)
        return device_id, secret

    async def connect(self, broker: BrokerProcess, device_id: str, secret: str) -> RawClient:
        hour = iotda_hour()
        code, client = await connect_as_device(
            lambda: RawClient.open("127.0.0.1", broker.plain_port),
            f"{device_id}_0_0_{hour}",
            device_id,
            iotda_password(secret, hour),
        )
        assert code == ACCEPTED
        assert client is not None
        return client


def connect_before_the_gateway(broker: BrokerProcess, device_id: str, secret: str) -> socket.socket:
    """CONNECT on a blocking socket, then wait until the broker holds the device's notice,
    all without yielding to the event loop: the gateway runs in it and cannot subscribe
    again meanwhile, as when a device beats the gateway's reconnect backoff."""
    hour = iotda_hour()
    sock = socket.create_connection(("127.0.0.1", broker.plain_port), timeout=10)
    sock.sendall(
        connect_packet(f"{device_id}_0_0_{hour}", device_id, iotda_password(secret, hour), 60)
    )
    connack = sock.recv(4)
    assert len(connack) == 4, connack
    assert (connack[0] >> 4, connack[3]) == (CONNACK, ACCEPTED), connack
    deadline = time.monotonic() + 10
    while broker.metric("ota_broker_presence_held") < 1:
        assert time.monotonic() < deadline, "the broker did not hold the device's notice"
        time.sleep(0.02)
    sock.settimeout(None)
    return sock


def online_notices(records: list[Any], device_id: str) -> list[PresenceRecord]:
    return [
        r
        for r in records
        if isinstance(r, PresenceRecord) and r.device_id == device_id and r.online
    ]


async def version_query(client: RawClient) -> dict[str, Any]:
    topic, payload = await client.receive(timeout_s=30)
    body: dict[str, Any] = json.loads(payload)
    assert body["services"][0]["event_type"] == "version_query", (topic, body)
    return body


@dataclass
class Rig:
    """A private broker (`broker` names its ports, also after a restart), a gateway and a
    worker on the real Kafka and Redis (database 15), and readers of the inbox and events."""

    lib: Path
    tmp_path: Path
    auth: AuthServer
    fleet: Fleet
    broker: BrokerProcess
    inbox: Inbox
    inbox_reader: KafkaReader
    events: KafkaReader
    second: BrokerProcess | None = None
    clients: list[RawClient] = field(default_factory=list)

    async def connect(self, device_id: str, secret: str) -> RawClient:
        client = await self.fleet.connect(self.broker, device_id, secret)
        self.clients.append(client)
        return client

    def crash_and_restart(self) -> None:
        """SIGKILL (no offline is announced), then the same ports again."""
        os.killpg(self.broker.process.pid, signal.SIGKILL)
        self.broker.stop()
        self.second = restart_same_ports(
            self.lib, self.tmp_path / "second", self.broker, self.auth.url, AUTH_KEY
        )

    async def gateway_subscribed_again(self) -> None:
        """A probe device's notice in the inbox proves the gateway subscribed again, so a
        device's notice after it is published to a subscriber."""
        probe_id, probe_secret = self.fleet.add()
        await self.connect(probe_id, probe_secret)
        await self.inbox_reader.wait_for(lambda rs: len(online_notices(rs, probe_id)) >= 1, 60)

    async def job_events(self, device_id: str, done: Callable[[JobEventRecord], bool]) -> list[str]:
        """The device's job events once one of them is `done`, as state or note names."""
        records = await self.events.wait_for(
            lambda rs: any(
                isinstance(r, JobEventRecord) and r.device_id == device_id and done(r) for r in rs
            )
        )
        return [
            r.detail.get("note") or r.to_state
            for r in records
            if isinstance(r, JobEventRecord) and r.device_id == device_id
        ]


@contextlib.asynccontextmanager
async def crash_rig(
    lib: Path, topics: Topics, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    auth = AuthServer(AUTH_KEY)
    broker = start_broker(lib, tmp_path / "first", auth.url, AUTH_KEY)
    url = f"{redis_url.rsplit('/', 1)[0] if redis_url.count('/') > 2 else redis_url}/{SCRATCH_DB}"
    store = contextlib.contextmanager(worker_redis)(url)
    store.__enter__()  # flushes database 15 now and when the test ends
    settings = replace(
        make_settings(kafka_bootstrap, url, topics), group_id=f"t-crash-{uuid.uuid4().hex[:6]}"
    )
    stack = Stack(
        kafka_bootstrap,
        topics,
        "127.0.0.1",
        broker.plain_port,
        broker.platform_port,
        {
            "OTA_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "OTA_TOPIC_PREFIX": topics.inbox.removesuffix("ota.inbox"),
            "OTA_MQTT_HOST": "127.0.0.1",
            "OTA_MQTT_PORT": str(broker.plain_port),
            "OTA_MQTT_PLATFORM_PORT": str(broker.platform_port),
            "OTA_MQTT_PLATFORM_USER": broker.platform_user,
            "OTA_MQTT_PLATFORM_PASSWORD": broker.platform_password,
            "OTA_GATEWAY_CLIENT_ID": f"ota-gw-crash-{uuid.uuid4().hex[:6]}",
            "OTA_GATEWAY_CONSUMER_GROUP": f"ota-gw-crash-{uuid.uuid4().hex[:6]}",
            "OTA_GATEWAY_METRICS_PORT": "0",
            "OTA_REDIS_URL": url,  # where it records a broker outage for the sweeper
        },
    )
    rig = Rig(
        lib,
        tmp_path,
        auth,
        Fleet(auth),
        broker,
        Inbox(settings),
        KafkaReader(kafka_bootstrap, topics.inbox),
        KafkaReader(kafka_bootstrap, topics.job_events),
    )
    worker = ThreadWorker(settings)
    try:
        async with running_gateway(stack):
            yield rig
    finally:
        for client in rig.clients:
            client.abort()
        worker.stop()
        rig.inbox.close()
        rig.inbox_reader.close()
        rig.events.close()
        for process in (rig.second, broker):
            if process is not None and process.process.poll() is None:
                process.stop()
        auth.close()
        store.__exit__(None, None, None)


@pytest.mark.parametrize("early", [False, True], ids=["after_gateway", "before_gateway"])
async def test_a_query_lost_in_a_broker_crash_is_sent_again_on_reconnect(
    early: bool,
    lib: Path,
    topics: Topics,
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    async with crash_rig(lib, topics, kafka_bootstrap, redis_url, tmp_path) as rig:
        device_id, secret = rig.fleet.add()
        first = await rig.connect(device_id, secret)
        await rig.inbox_reader.wait_for(lambda rs: len(online_notices(rs, device_id)) >= 1)
        rig.inbox.start(device_id, "task-crash")
        await version_query(first)  # delivered; the device will not answer this one

        rig.crash_and_restart()
        if early:
            # (the restarted broker has the old one's ports: `broker` names them)
            sock = connect_before_the_gateway(rig.broker, device_id, secret)
            again = RawClient(*await asyncio.open_connection(sock=sock))
            rig.clients.append(again)
        else:
            await rig.gateway_subscribed_again()
            again = await rig.connect(device_id, secret)
        resent = await version_query(again)
        seen = await rig.job_events(device_id, lambda r: r.detail.get("note") == "query_resent")
        # The worker resent the query on the second notice, so it is in the inbox; the
        # reader may not have read it yet.
        read = await rig.inbox_reader.wait_for(lambda rs: len(online_notices(rs, device_id)) >= 2)
        notices = online_notices(read, device_id)
        assert len(notices) == 2
        assert notices[0].connection != notices[1].connection
        assert resent["services"][0]["event_id"]
        assert "FAILED" not in seen
        if early:
            assert rig.broker.metric("ota_broker_presence_held") == 0  # the restarted broker's


async def test_a_result_lost_in_a_broker_crash_is_found_by_the_reconnect_query(
    lib: Path, topics: Topics, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """A device in DOWNLOADED installs and reports its result while the broker is dead (the
    report reaches nobody): its reconnect gets a version query, and its answer, the target
    version, ends the job at once instead of its update_start_s window."""
    async with crash_rig(lib, topics, kafka_bootstrap, redis_url, tmp_path) as rig:
        device_id, secret = rig.fleet.add()
        device = await rig.connect(device_id, secret)
        await rig.inbox_reader.wait_for(lambda rs: len(online_notices(rs, device_id)) >= 1)
        rig.inbox.start(device_id, "task-lost-result")
        asked = await version_query(device)
        await answer_version(device, device_id, "1.0", asked)
        upgrade = await next_command(device)
        assert upgrade["services"][0]["event_type"] == "firmware_upgrade"
        rig.inbox.download(device_id, DownloadPhase.FINISHED)  # the edge saw the last byte
        await rig.job_events(device_id, lambda r: r.to_state == "DOWNLOADED")

        rig.crash_and_restart()  # the device's result, sent now, would reach nobody
        await rig.gateway_subscribed_again()
        again = await rig.connect(device_id, secret)
        query = await version_query(again)
        await answer_version(again, device_id, TARGET, query)
        seen = await rig.job_events(device_id, lambda r: r.to_state == "SUCCEEDED")
        assert seen[-2:] == ["reconnect_query", "SUCCEEDED"]
        assert "FAILED" not in seen
        assert "WAITING_RETRY" not in seen


async def test_a_device_the_crash_keeps_away_past_its_window_is_held_until_it_is_back(
    lib: Path, topics: Topics, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """A device in DOWNLOADED with a 10 s update window (long enough to still run when the
    broker is killed) stays away after the crash until that window has run out: the gateway recorded the outage, so the sweeper holds the
    deadline instead of firing it; once the device is back, its reconnect query and the
    target version end the job with no timeout, failure or retry."""
    async with crash_rig(lib, topics, kafka_bootstrap, redis_url, tmp_path) as rig:
        device_id, secret = rig.fleet.add()
        device = await rig.connect(device_id, secret)
        await rig.inbox_reader.wait_for(lambda rs: len(online_notices(rs, device_id)) >= 1)
        rig.inbox.start(device_id, "task-held", windows=replace(SHORT, update_start_s=10))
        asked = await version_query(device)
        await answer_version(device, device_id, "1.0", asked)
        await next_command(device)
        rig.inbox.download(device_id, DownloadPhase.FINISHED)
        await rig.job_events(device_id, lambda r: r.to_state == "DOWNLOADED")
        held_before = held_deadlines()

        rig.crash_and_restart()
        await rig.gateway_subscribed_again()
        # The sweeper's count is the only sign of the hold: waited for off the event loop.
        await asyncio.to_thread(
            wait_until, lambda: held_deadlines() > held_before, 60, "the deadline held"
        )
        again = await rig.connect(device_id, secret)
        query = await version_query(again)
        await answer_version(again, device_id, TARGET, query)
        seen = await rig.job_events(device_id, lambda r: r.to_state == "SUCCEEDED")
        assert seen[-2:] == ["reconnect_query", "SUCCEEDED"]
        assert not {"VERIFYING", "FAILED", "WAITING_RETRY"} & set(seen)


def held_deadlines() -> float:
    """Deadlines the sweepers of this process held for a broker outage."""
    return REGISTRY.get_sample_value("ota_worker_deadlines_held_broker_total") or 0.0


async def next_command(client: RawClient) -> dict[str, Any]:
    _, payload = await client.receive(timeout_s=30)
    body: dict[str, Any] = json.loads(payload)
    return body


async def answer_version(
    client: RawClient, device_id: str, fw_version: str, query: dict[str, Any]
) -> None:
    event = uplink_event(VersionReport(fw_version), query["services"][0]["event_id"])
    await client.send_publish(up_topic(device_id), encode_envelope(device_id, (event,), now_ms()))
