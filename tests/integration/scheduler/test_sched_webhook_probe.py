"""A webhook's test delivery (`POST /v1/webhooks/{id}/test`): one signed event sent now,
its outcome answered and logged, no retry after a refusal, write scope only."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from scheduler.webhook_signing import verify
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import READ_KEY, Harness
from tests.integration.scheduler.test_sched_notifications import Receiver

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

SECRET = "probe-secret-0123456789"


@pytest.fixture
async def refusing() -> AsyncIterator[Receiver]:
    r = Receiver(script=[503])
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    async with server:
        yield r


async def _hook(harness: Harness, url: str) -> str:
    created = await harness.client.post(
        "/v1/webhooks", json={"url": url, "secret": SECRET, "events": ["task_status"]}
    )
    assert created.status_code == 201, created.text
    hid: str = created.json()["id"]
    return hid


async def test_a_test_event_is_signed_answered_and_logged(
    harness: Harness, refusing: Receiver
) -> None:
    hid = await _hook(harness, f"http://127.0.0.1:{refusing.port}/ota")
    answer = await harness.client.post(f"/v1/webhooks/{hid}/test")
    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert (outcome["kind"], outcome["status_code"], outcome["ok"]) == ("test", 503, False)
    assert len(refusing.received) == 1  # refused, and not retried
    again = (await harness.client.post(f"/v1/webhooks/{hid}/test")).json()
    assert (again["status_code"], again["ok"]) == (200, True)
    headers, body, _ = refusing.received[1]
    event = orjson.loads(body)
    assert event["kind"] == "test"
    assert event["id"] == again["event_id"]
    assert verify([SECRET], headers, body, int(time.time())) == headers["webhook-id"]
    log = (await harness.client.get(f"/v1/webhooks/{hid}/deliveries")).json()["items"]
    assert [(d["kind"], d.get("status_code"), d["final"]) for d in log] == [
        ("test", 200, True),
        ("test", 503, True),
    ]


async def test_an_unreachable_endpoint_is_reported_not_raised(harness: Harness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused
        hid = await _hook(harness, f"http://127.0.0.1:{port}/ota")
        outcome = (await harness.client.post(f"/v1/webhooks/{hid}/test")).json()
    assert outcome["ok"] is False
    assert "ConnectError" in outcome["error"]


async def test_only_a_write_key_sends_and_only_to_a_known_webhook(harness: Harness) -> None:
    unknown = await harness.client.post("/v1/webhooks/nope/test")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_webhook"
    hid = await _hook(harness, "http://127.0.0.1:9/ota")
    async with httpx.AsyncClient(
        base_url=harness.base_url, headers={"Authorization": f"Bearer {READ_KEY}"}
    ) as reader:
        refused = await reader.post(f"/v1/webhooks/{hid}/test")
    assert refused.status_code == 403
    log = (await harness.client.get(f"/v1/webhooks/{hid}/deliveries")).json()["items"]
    assert log == []
