"""The audit trail: which operator key changed what, when and from where.

Every request to a write- or admin-scope endpoint of the API (creating, pausing, resuming,
cancelling and retrying tasks; uploading and deleting packages; webhooks; device
credentials and CAs; API keys), every action taken in the console (scheduler/console/web.py)
and every console login and logout (scheduler/console/pages_auth.py) is recorded after it
was answered, refused ones included, by `exchange` here:

    {"v": 1, "id", "at_ms", "key_id", "action", "method", "path", "route", "target",
     "status", "outcome", "result_id", "client", "forwarded_for"}

`key_id` names the API key by a fingerprint, `sha256:` and the first 12 hex digits of
the SHA-256 of the key (`printf %s "$KEY" | sha256sum | cut -c1-12`), never the key
itself; it is null when no known key was presented. `action` is the endpoint's
operation (`pause_task`, `upload_package`, ...; a console action names the API operation
it performs), `target` its path parameters, and `result_id` the id of what a successful
request created. `route` tells the two apart: console routes start with `/console/`.

Kafka's `ota.audit` topic (key = key id, a year's retention) is the record; a capped
Redis stream is the view `GET /v1/audit` pages through, newest first. A record that
cannot be written is logged and counted (`ota_scheduler_audit_failures_total`), never
turned into a failed answer: the operation it describes has already happened.

Attempts by someone unknown (no key or a wrong one: 401; a failed console login) go
through `record_failure`, within one budget (scheduler/audit_budget.py) shared by every
replica through Redis (scheduler/shared_budget.py): a flood of them writes at most that,
and one `unrecorded_failures` record counts the rest.

The topic is checked once at start-up (`scheduler.bus.absent_topics`): a send to a missing topic
would hold the scheduler's one producer thread for kafka-python's max_block_ms on every
write request. Without it, records go to Redis only (logged at start, counted per record)
until the topic is created (deploy/topics.toml) and the scheduler restarted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio
from kafka.errors import KafkaError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from ota import metrics
from ota.clock import now_ms
from ota.records import new_id
from scheduler import keys
from scheduler.bus import Out, Producer
from scheduler.errors import ValidationError
from scheduler.shared_budget import SharedFailureBudget

log = logging.getLogger(__name__)
STREAM = keys.AUDIT_STREAM  # capped at STREAM_CAP
STREAM_CAP = 100_000
RESULT_ID_MAX_BYTES = 64 * 1024  # response bodies parsed for the id of what was created
FAILURES = metrics.counter(
    "scheduler", "audit_failures_total", "Audit records that could not be written", ("store",)
)
UNRECORDED = metrics.counter(
    "scheduler",
    "audit_unrecorded_total",
    "Refused unauthenticated attempts over the audit budget: counted, not recorded one by one",
)
UNRECORDED_ACTION = "unrecorded_failures"  # the record that counts them


def key_id(key: str) -> str:
    """An API key's public name in the audit trail: a fingerprint, not the key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "refused" if status < 500 else "error"


def result_id(status: int, content_type: str, body: bytes) -> str | None:
    """The `id` of the JSON object a successful request answered with, if any."""
    if not 200 <= status < 300 or "json" not in content_type:
        return None
    if not body or len(body) > RESULT_ID_MAX_BYTES:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = parsed.get("id") if isinstance(parsed, dict) else None
    return found if isinstance(found, str) else None


def entry(
    *,
    key_id: str | None,
    action: str,
    method: str,
    path: str,
    route: str,
    target: Mapping[str, str],
    status: int,
    created: str | None,
    client: str | None,
    forwarded_for: str | None,
    at_ms: int,
) -> dict[str, Any]:
    """One audit record (pure: the caller supplies the time and the request's facts)."""
    return {
        "v": 1,
        "id": new_id(),
        "at_ms": at_ms,
        "key_id": key_id,
        "action": action,
        "method": method,
        "path": path[:512],
        "route": route,
        "target": dict(target),
        "status": status,
        "outcome": outcome(status),
        "result_id": created,
        "client": client,
        "forwarded_for": forwarded_for[:256] if forwarded_for else None,
    }


def exchange(
    request: Request,
    response: Response,
    *,
    key_id: str | None,
    action: str,
    route: str,
    created: str | None = None,
) -> dict[str, Any]:
    """The audit record of one answered HTTP request, API or console alike. `created`
    names what was made when the answer's JSON body does not (a console redirect)."""
    body = getattr(response, "body", b"")
    return entry(
        key_id=key_id,
        action=action,
        method=request.method,
        path=request.url.path,
        route=route,
        target={k: str(v) for k, v in request.path_params.items()},
        status=response.status_code,
        created=created
        or result_id(
            response.status_code,
            response.headers.get("content-type", ""),
            body if isinstance(body, bytes) else b"",
        ),
        client=request.client.host if request.client else None,
        forwarded_for=request.headers.get("x-forwarded-for"),
        at_ms=now_ms(),
    )


def unrecorded(count: int, at_ms: int) -> dict[str, Any]:
    """The record counting `count` refused attempts not recorded one by one (from any
    address, on any route: none is named)."""
    return entry(
        key_id=None,
        action=UNRECORDED_ACTION,
        method="-",
        path="-",
        route="-",
        target={"count": str(count)},
        status=429,
        created=None,
        client=None,
        forwarded_for=None,
        at_ms=at_ms,
    )


class AuditLog:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        producer: Producer,
        topic: str,
        *,
        to_kafka: bool = True,
        budget: SharedFailureBudget | None = None,
    ) -> None:
        self._r, self._producer, self._topic = r, producer, topic
        self._to_kafka = to_kafka
        self._budget = budget or SharedFailureBudget(r, 100, 60.0)
        if not to_kafka:
            log.error(
                "the audit topic does not exist: audit records go to Redis only; create it "
                "(deploy/topics.toml) and restart the scheduler",
                extra={"topic": topic},
            )

    async def record(self, record: dict[str, Any]) -> None:
        """Writes to Kafka (the record), then Redis (the view); failures are logged."""
        raw = orjson.dumps(record)
        if not self._to_kafka:
            FAILURES.labels("kafka").inc()
        else:
            try:
                await self._producer.send([Out(self._topic, record["key_id"] or "-", raw)])
            except KafkaError:
                FAILURES.labels("kafka").inc()
                log.exception("audit record not written to Kafka", extra={"audit": record})
        try:
            await self._r.xadd(STREAM, {b"e": raw}, maxlen=STREAM_CAP, approximate=True)
        except RedisError:
            FAILURES.labels("redis").inc()
            log.exception("audit record not written to Redis", extra={"audit": record})

    async def record_failure(self, record: dict[str, Any]) -> None:
        """A refused attempt by someone unknown (no key, a wrong one, a failed console
        login): recorded within the budget every replica shares (scheduler/audit_budget.py),
        else counted, and the count recorded once the budget allows."""
        recording = await self._budget.record_failure()
        if recording.unrecorded:
            await self.record(unrecorded(recording.unrecorded, now_ms()))
        if recording.record:
            await self.record(record)
        else:
            UNRECORDED.inc()

    async def page(self, limit: int, cursor: str | None) -> dict[str, Any]:
        """Newest first; `next_cursor` continues after the last item returned."""
        if cursor is not None and not _is_stream_id(cursor):
            raise ValidationError(
                f"cursor {cursor[:40]!r} is not a cursor this API returned",
                code="bad_cursor",
                field="cursor",
            )
        top = f"({cursor}" if cursor else "+"
        rows = await self._r.xrevrange(STREAM, max=top, min="-", count=limit)
        items = [orjson.loads(fields[b"e"]) for _, fields in rows]
        more = len(rows) == limit
        return {"items": items, "next_cursor": rows[-1][0].decode() if more else None}


def _is_stream_id(text: str) -> bool:
    ms, sep, seq = text.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit() and len(text) <= 41
