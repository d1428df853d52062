"""Presence names connections, through the real broker and gateway. A device connecting
again while its first connection is open (a take-over: the broker announces no offline,
the same shape as the reconnects after a broker crash) is reported online again with
another connection, so the worker can tell it from a repeated notice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devices.fleet import DEFAULT_SEED, derived_secret
from ota.clock import now_ms
from ota.device_auth import credentials_for
from ota.records import PresenceRecord
from tests.integration.broker.rawmqtt import RawClient
from tests.integration.gateway.conftest import KafkaReader, Stack, new_device, running_gateway

ACCEPTED = 0


def broker_presence(records: list[Any], device_id: str) -> list[PresenceRecord]:
    return [
        r
        for r in records
        if isinstance(r, PresenceRecord) and r.device_id == device_id and r.source == "broker"
    ]


async def connected(stack: Stack, device_id: str) -> RawClient:
    sent = credentials_for(device_id, derived_secret(DEFAULT_SEED, device_id), now_ms())
    client = await RawClient.open(stack.mqtt_host, stack.device_port)
    assert await client.connect(sent.client_id, sent.username, sent.password) == ACCEPTED
    return client


async def test_a_second_connect_is_reported_with_a_new_connection(
    stack: Stack, readers: Callable[[str], KafkaReader]
) -> None:
    inbox = readers(stack.topics.inbox)
    device_id = new_device()
    await stack.register([device_id])
    async with running_gateway(stack):
        first = await connected(stack, device_id)
        await inbox.wait_for(lambda rs: len(broker_presence(rs, device_id)) >= 1)
        second = await connected(stack, device_id)  # the same client id: a take-over
        await inbox.wait_for(lambda rs: len(broker_presence(rs, device_id)) >= 2)
        await second.disconnect()
        records = await inbox.wait_for(
            lambda rs: any(not p.online for p in broker_presence(rs, device_id))
        )
        first.abort()
    notices = broker_presence(records, device_id)
    assert [p.online for p in notices] == [True, True, False]
    one, two = notices[0].connection, notices[1].connection
    assert one is not None
    assert two is not None
    assert one != two
    assert notices[2].connection is None
