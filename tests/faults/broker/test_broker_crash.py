"""The device broker killed with SIGKILL and started again on the same ports: it announces
no offline, its devices reconnect, and the version query lost with the old connection
reaches the device again, whether the device reconnects after the gateway subscribed again
or before (its notice then held by the broker until the gateway subscribes). A private broker, gateway and worker on the real Kafka and
Redis (database 15); the stack's broker is never touched."""

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
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from workerkit import Inbox, ThreadWorker, make_settings, worker_redis

from ota.records import JobEventRecord, PresenceRecord
from ota.settings import Topics
from tests.conftest import missing
from tests.integration.broker.authserver import AuthServer, iotda_hour, iotda_password
from tests.integration.broker.broker_support import (
    BrokerProcess,
    broker_lib,
    restart_same_ports,
    start_broker,
)
from tests.integration.broker.rawmqtt import CONNACK, RawClient, connect_packet
from tests.integration.gateway.conftest import KafkaReader, Stack, running_gateway

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
        client = await RawClient.open("127.0.0.1", broker.plain_port)
        code = await client.connect(
            f"{device_id}_0_0_{hour}", device_id, iotda_password(secret, hour)
        )
        assert code == ACCEPTED
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


@pytest.mark.parametrize("early", [False, True], ids=["after_gateway", "before_gateway"])
async def test_a_query_lost_in_a_broker_crash_is_sent_again_on_reconnect(
    early: bool,
    lib: Path,
    topics: Topics,
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    auth = AuthServer(AUTH_KEY)
    fleet = Fleet(auth)
    broker = start_broker(lib, tmp_path / "first", auth.url, AUTH_KEY)
    second: BrokerProcess | None = None
    clients: list[RawClient] = []
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
        },
    )
    inbox_reader = KafkaReader(kafka_bootstrap, topics.inbox)
    events = KafkaReader(kafka_bootstrap, topics.job_events)
    inbox = Inbox(settings)
    worker = ThreadWorker(settings)
    try:
        async with running_gateway(stack):
            device_id, secret = fleet.add()
            first = await fleet.connect(broker, device_id, secret)
            clients.append(first)
            await inbox_reader.wait_for(lambda rs: len(online_notices(rs, device_id)) >= 1)
            inbox.start(device_id, "task-crash")
            await version_query(first)  # delivered; the device will not answer this one

            os.killpg(broker.process.pid, signal.SIGKILL)  # no offline is announced
            broker.stop()
            second = restart_same_ports(lib, tmp_path / "second", broker, auth.url, AUTH_KEY)
            if early:
                # (the restarted broker has the old one's ports: `broker` names them)
                sock = connect_before_the_gateway(broker, device_id, secret)
                again = RawClient(*await asyncio.open_connection(sock=sock))
            else:
                # A probe device's notice in the inbox proves the gateway subscribed again,
                # so the device's own notice below is published to a subscriber.
                probe_id, probe_secret = fleet.add()
                clients.append(await fleet.connect(broker, probe_id, probe_secret))
                await inbox_reader.wait_for(lambda rs: len(online_notices(rs, probe_id)) >= 1, 60)
                again = await fleet.connect(broker, device_id, secret)
            clients.append(again)
            resent = await version_query(again)
            records = await events.wait_for(
                lambda rs: any(
                    isinstance(r, JobEventRecord)
                    and r.device_id == device_id
                    and r.detail.get("note") == "query_resent"
                    for r in rs
                )
            )
        notices = online_notices(inbox_reader.snapshot(), device_id)
        assert len(notices) == 2
        assert notices[0].connection != notices[1].connection
        assert resent["services"][0]["event_id"]
        states = [
            r.to_state
            for r in records
            if isinstance(r, JobEventRecord) and r.device_id == device_id
        ]
        assert "FAILED" not in states
        if early:
            assert broker.metric("ota_broker_presence_held") == 0  # the restarted broker's
    finally:
        for client in clients:
            client.abort()
        worker.stop()
        inbox.close()
        inbox_reader.close()
        events.close()
        for process in (second, broker):
            if process is not None and process.process.poll() is None:
                process.stop()
        auth.close()
        store.__exit__(None, None, None)
