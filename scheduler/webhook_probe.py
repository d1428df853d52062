"""A webhook's test delivery: one signed POST of a `test` event, now, written to its log.

An operator sends one after adding a webhook (console: the webhook's page, *Send a test
event*; API: `POST /v1/webhooks/{id}/test`) to see that the endpoint answers and accepts
the signature before a rollout depends on it. It goes out as a delivery does (the same
signature headers, signed with every active secret: `scheduler/webhook_signing.py`), but
once, at once, with no retry and whatever the webhook's event filter. Its outcome (the
status code, or the transport error) is the answer and the newest entry of the webhook's
delivery log, with kind `test`.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import redis.asyncio

from ota.clock import now_ms
from ota.records import new_id
from scheduler import keys, webhook_signing
from scheduler.errors import NotFound
from scheduler.webhooks import LOG_CAP, Webhooks, active_secrets, message_id

TEST_KIND = "test"


def probe_event(hid: str, at_ms: int) -> dict[str, Any]:
    return {
        "id": new_id(),
        "kind": TEST_KIND,
        "webhook_id": hid,
        "at_ms": at_ms,
        "message": "a test delivery sent by an operator; no task or device changed",
    }


async def send_test(
    r: redis.asyncio.Redis[bytes], hooks: Webhooks, hid: str, timeout_s: float
) -> dict[str, Any]:
    """Deliver one test event to webhook `hid`; returns the attempt as its log records it."""
    hook = next((h for h in await hooks.all() if h["id"] == hid), None)
    if hook is None:
        raise NotFound(f"webhook {hid!r} does not exist", code="unknown_webhook")
    event = probe_event(hid, now_ms())
    body = orjson.dumps(event)
    headers = {
        "Content-Type": "application/json",
        "X-OTA-Event-Id": event["id"],
        **webhook_signing.headers(
            active_secrets(hook), message_id(event, hook), now_ms() // 1000, body
        ),
    }
    outcome: dict[str, Any] = {"event_id": event["id"], "kind": TEST_KIND, "attempt": 1}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.post(hook["url"], content=body, headers=headers)
        outcome["status_code"] = response.status_code
        ok = 200 <= response.status_code < 300
    except httpx.HTTPError as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
        ok = False
    outcome.update(ok=ok, at_ms=now_ms(), final=True)
    pipe = r.pipeline(transaction=False)
    pipe.lpush(keys.webhook_log(hid), orjson.dumps(outcome))
    pipe.ltrim(keys.webhook_log(hid), 0, LOG_CAP - 1)
    await pipe.execute()
    return outcome
