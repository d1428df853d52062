"""Webhooks: registration, and at-least-once delivery of notifications with a log.

A registration is recorded in Kafka first, then in Redis: every create, rotation,
retirement of a previous secret and deletion writes the webhook's whole record, its
secrets sealed (scheduler/webhook_record.py), or a tombstone, to the compacted webhooks
topic, then the Redis hash `keys.WEBHOOKS` that deliveries read; scheduler/rebuild.py
restores the hash from the topic after Redis is lost. A delete also drops the delivery log
and marks the id for `DELETED_MARK_S`, so that a replica's start-up that read the topic
before the tombstone does not put the webhook back. The delivery log and the
notification stream are Redis only.

Each notification in the Redis stream is delivered to every matching webhook as an
HTTP POST of its JSON body, signed in the Standard Webhooks scheme over the message id,
the attempt's timestamp and the body (scheduler/webhook_signing.py), with the webhook's
secret and, while it is being rotated, its previous one. A failed attempt (no 2xx, or a transport error)
is retried with jittered exponential backoff up to the configured attempts (the
documented schedule, computed by the shared `ota.backoff` policy and retried by its
`retry`: operation `scheduler.webhook`); the
stream entry is acknowledged once every webhook got it or gave up, and entries of a
replica that died are claimed by another after `CLAIM_IDLE_MS`; a replica whose round
failed (Redis away) reads its own unacknowledged entries first when Redis is back. Every attempt is
written to the webhook's delivery log (capped), readable through the API. Entries every
consumer group has read and acknowledged are trimmed from the stream (`trim_point`, every
`TRIM_EVERY_S`): a finished device's notification costs nothing once delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from ota import metrics
from ota.backoff import Backoff, StoppedError, retry
from ota.clock import now_ms
from ota.records import new_id
from scheduler import keys, webhook_record, webhook_signing
from scheduler.bus import Out, Producer
from scheduler.errors import Conflict, NotFound, ValidationError
from scheduler.fields import Obj
from scheduler.secretbox import SecretBox
from scheduler.webhook_record import SECRET_FIELDS

log = logging.getLogger(__name__)
GROUP = "webhooks"
CLAIM_IDLE_MS = 60_000
LOG_CAP = 1000
MAX_BACKOFF_S = 300.0
ROUND_RETRY = Backoff(0.2, 5.0)  # the dispatcher's rounds while Redis is away
EVENT_KINDS = ("task_status", "device_result")
TRIM_EVERY_S = 5.0  # how often a replica drops delivered entries from the stream
# A deleted webhook's mark outlives any start-up's read of the topic (`restore`).
DELETED_MARK_S = 3600
DELIVERIES = metrics.counter(
    "scheduler", "webhook_attempts_total", "Webhook attempts", ("outcome",)
)


def message_id(event: dict[str, Any], hook: dict[str, Any]) -> str:
    """The delivery's webhook-id: one per (event, webhook), the same on every retry."""
    return f"{event.get('id', '')}_{hook['id']}"


def active_secrets(hook: dict[str, Any]) -> list[str]:
    """The keys a delivery is signed with: the secret, then the one it is replacing."""
    return [hook["secret"], *([hook["previous_secret"]] if hook.get("previous_secret") else [])]


def delivery_policy(base_s: float, attempts: int, rng: random.Random) -> Backoff:
    """The documented schedule (docs/scheduler.md): the wait after attempt n is
    base * 2^(n-1), capped at MAX_BACKOFF_S, then jittered by +-50%; `attempts` in all."""
    return Backoff(
        min(base_s, MAX_BACKOFF_S),  # a base above the cap waits the cap, as min() says
        MAX_BACKOFF_S,
        attempts - 1,
        rand=lambda: rng.uniform(0.5, 1.5),
    )


class _DeliveryFailedError(Exception):
    """An attempt that got no 2xx (or no answer)."""


def parse_webhook(body: Any) -> dict[str, Any]:
    b = Obj(body, "", frozenset({"url", "secret", "events", "task_id"}))
    url = b.text("url", max_len=2048)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(
            f"url {url[:80]!r} is not an http(s) URL", code="bad_url", field="url"
        )
    secret = parse_secret(b)
    events = b.strings("events", max_items=len(EVENT_KINDS)) or EVENT_KINDS
    for kind in events:
        if kind not in EVENT_KINDS:
            raise ValidationError(
                f"events has {kind!r}; use {', '.join(EVENT_KINDS)}",
                code="bad_value",
                field="events",
            )
    return {
        "url": url,
        "secret": secret,
        "events": list(events),
        "task_id": b.text("task_id", None, max_len=64),
    }


def parse_secret(b: Obj) -> str:
    secret: str = b.text("secret", max_len=256)
    if len(secret) < 16:
        raise ValidationError(
            "secret must be at least 16 characters", code="weak_secret", field="secret"
        )
    return secret


def public(hook: dict[str, Any]) -> dict[str, Any]:
    """A webhook as the API shows it: no secret, and whether two keys are active."""
    shown = {k: v for k, v in hook.items() if k not in SECRET_FIELDS}
    shown["rotating"] = bool(hook.get("previous_secret"))
    return shown


class Webhooks:
    def __init__(
        self, r: redis.asyncio.Redis[bytes], producer: Producer, topic: str, box: SecretBox
    ) -> None:
        self._r, self._producer, self._topic, self._box = r, producer, topic, box

    async def _save(self, hook: dict[str, Any]) -> dict[str, Any]:
        record = webhook_record.seal(self._box, hook)
        await self._producer.send([Out(self._topic, hook["id"], record)])  # the record first
        await self._r.hset(keys.WEBHOOKS, hook["id"], orjson.dumps(hook))
        return public(hook)

    async def create(self, body: Any) -> dict[str, Any]:
        return await self._save({"id": new_id(), **parse_webhook(body), "created_ms": now_ms()})

    async def restore(self, latest: Mapping[str, bytes | None]) -> dict[str, int]:
        """Redis and the topic made to agree at start-up, `latest` the topic's last record
        per webhook: a registration Redis lacks is put back, a tombstone finishes a delete
        that stopped before Redis, and a registration the topic never had (made before
        webhooks were recorded in Kafka) is recorded. A record that does not open is
        logged with its webhook id and skipped."""
        done = {"webhooks": 0, "webhooks_deleted": 0, "webhooks_recorded": 0}
        held = {k.decode(): v for k, v in (await self._r.hgetall(keys.WEBHOOKS)).items()}
        for hid, raw in latest.items():
            if raw is None:
                if hid in held:  # a tombstone seen before is not deleted again each start
                    done["webhooks_deleted"] += await self._r.hdel(keys.WEBHOOKS, hid)
                continue
            if hid in held or await self._r.exists(keys.webhook_deleted(hid)):
                continue
            try:
                hook = webhook_record.open_record(self._box, hid, raw)
            except webhook_record.UnreadableRecord as exc:
                log.error("webhook not restored", extra={"webhook": hid, "reason": str(exc)})
                continue
            done["webhooks"] += await self._r.hsetnx(keys.WEBHOOKS, hid, orjson.dumps(hook))
        unrecorded = []
        for hid in held.keys() - latest.keys():
            try:
                record = webhook_record.seal(self._box, orjson.loads(held[hid]))
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
                log.error("webhook not recorded", extra={"webhook": hid, "reason": repr(exc)})
                continue
            unrecorded.append(Out(self._topic, hid, record))
        if unrecorded:
            await self._producer.send(unrecorded)
        done["webhooks_recorded"] = len(unrecorded)
        return done

    async def all(self) -> list[dict[str, Any]]:
        raw = await self._r.hgetall(keys.WEBHOOKS)
        return sorted((orjson.loads(v) for v in raw.values()), key=lambda h: h["created_ms"])

    async def _get(self, hid: str) -> dict[str, Any]:
        raw = await self._r.hget(keys.WEBHOOKS, hid)
        if raw is None:
            raise NotFound(f"webhook {hid!r} does not exist", code="unknown_webhook")
        hook: dict[str, Any] = orjson.loads(raw)
        return hook

    async def rotate(self, hid: str, body: Any) -> dict[str, Any]:
        """A new secret signs from now on; the current one keeps signing beside it until
        `retire_previous`, so receivers can switch keys at their own pace. Refused while a
        rotation is still open (two active keys at most)."""
        secret = parse_secret(Obj(body, "", frozenset({"secret"})))
        hook = await self._get(hid)
        if hook.get("previous_secret"):
            raise Conflict(
                "a rotation is in progress: retire the previous secret first",
                code="rotation_in_progress",
            )
        if secret == hook["secret"]:
            raise ValidationError(
                "the new secret equals the current one", code="same_secret", field="secret"
            )
        hook.update(previous_secret=hook["secret"], secret=secret, rotated_ms=now_ms())
        return await self._save(hook)

    async def retire_previous(self, hid: str) -> dict[str, Any]:
        """Ends a rotation: deliveries are signed with the new secret only."""
        hook = await self._get(hid)
        hook.pop("previous_secret", None)
        return await self._save(hook)

    async def delete(self, hid: str) -> None:
        await self._get(hid)  # an unknown id writes no tombstone
        await self._producer.send([Out(self._topic, hid, None)])  # tombstone, then the view
        pipe = self._r.pipeline(transaction=True)
        pipe.hdel(keys.WEBHOOKS, hid)
        pipe.delete(keys.webhook_log(hid))
        # With the delete, atomically: a replica's start-up that read the topic before the
        # tombstone must not put the webhook back (`restore`).
        pipe.set(keys.webhook_deleted(hid), 1, ex=DELETED_MARK_S)
        await pipe.execute()

    async def deliveries(self, hid: str, limit: int) -> list[dict[str, Any]]:
        if not await self._r.hexists(keys.WEBHOOKS, hid):
            raise NotFound(f"webhook {hid!r} does not exist", code="unknown_webhook")
        return [orjson.loads(e) for e in await self._r.lrange(keys.webhook_log(hid), 0, limit - 1)]


def stream_id(raw: bytes | str) -> tuple[int, int]:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or "0")


def trim_point(groups: Sequence[tuple[bytes | str, bytes | str | None]]) -> str | None:
    """The stream id below which every group has read and acknowledged everything, from
    each group's (last delivered id, oldest pending id or None): the lowest of each
    group's oldest pending entry or, with none pending, its last delivered one. None
    without groups (nothing is known to be delivered)."""
    marks = [stream_id(pending if pending is not None else last) for last, pending in groups]
    if not marks:
        return None
    ms, seq = min(marks)
    return f"{ms}-{seq}"


class Dispatcher:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        hooks: Webhooks,
        *,
        consumer: str,
        attempts: int,
        backoff_s: float,
        timeout_s: float,
    ) -> None:
        self._r, self._hooks, self._consumer = r, hooks, consumer
        self._attempts, self._timeout = attempts, timeout_s
        self._policy = delivery_policy(backoff_s, attempts, random.Random())
        self._group_lost = False
        # This consumer may hold entries it read but never acknowledged (a round that failed
        # while Redis was away, or a predecessor with the same instance id that crashed):
        # read its own backlog first (id 0) instead of leaving them for CLAIM_IDLE_MS.
        self._backlog = True
        self._gate = asyncio.Semaphore(64)
        self._trimmed_at = time.monotonic()
        # Set by `run`: a stop ends a delivery's retry wait, its entry left unacknowledged
        # for the next round (another replica's claim, or this one's backlog at its start).
        self._stop = asyncio.Event()

    async def ensure_group(self) -> None:
        try:
            await self._r.xgroup_create(keys.NOTIFY_STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await self.ensure_group()
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while not stop.is_set():
                try:
                    await retry(
                        "scheduler.webhook_round",
                        lambda: self._recovering_round(client),
                        on=RedisError,
                        policy=ROUND_RETRY,
                        stop=stop,
                    )
                except StoppedError:
                    return

    async def _recovering_round(self, client: httpx.AsyncClient) -> None:
        # After a failed round the stream or its group may have vanished (Redis flushed or
        # replaced): recreate the group first, then carry on.
        if self._group_lost:
            await self.ensure_group()
            self._group_lost = False
        try:
            await self._round(client)
        except RedisError:
            self._group_lost = self._backlog = True
            raise

    async def _round(self, client: httpx.AsyncClient) -> None:
        claimed = await self._r.xautoclaim(
            keys.NOTIFY_STREAM, GROUP, self._consumer, CLAIM_IDLE_MS, "0-0", count=100
        )
        entries = list(claimed[1])
        if not entries:
            since = "0" if self._backlog else ">"  # "0": what this consumer has not acked
            read = await self._r.xreadgroup(
                GROUP, self._consumer, {keys.NOTIFY_STREAM: since}, count=100, block=500
            )
            entries = [e for _, batch in read for e in batch]
            if self._backlog and not entries:
                self._backlog = False  # the backlog is through: new entries from here on
                return
        hooks = await self._hooks.all()
        unwanted, deliveries = [], []
        for eid, fields in entries:
            body = fields.get(b"body", b"{}")
            event = orjson.loads(body)
            matching = [
                h
                for h in hooks
                if event.get("kind") in h["events"]
                and h.get("task_id") in (None, event.get("task_id"))
            ]
            if matching:
                deliveries.append(self._entry(client, matching, eid, event, body))
            else:
                unwanted.append(eid)
        if unwanted:  # one round trip for what no webhook wants (the usual case)
            await self._r.xack(keys.NOTIFY_STREAM, GROUP, *unwanted)  # type: ignore[no-untyped-call]
        await asyncio.gather(*deliveries)
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            await self.trim_delivered()

    async def trim_delivered(self) -> None:
        """Drop the stream's entries that every consumer group has acknowledged."""
        self._trimmed_at = time.monotonic()
        marks = []
        groups = await self._r.xinfo_groups(keys.NOTIFY_STREAM)  # type: ignore[no-untyped-call]
        for group in groups:
            name = group["name"]
            pending = await self._r.xpending(keys.NOTIFY_STREAM, name)  # type: ignore[no-untyped-call]
            marks.append(
                (group["last-delivered-id"], pending["min"] if pending["pending"] else None)
            )
        point = trim_point(marks)
        if point is not None:
            await self._r.xtrim(keys.NOTIFY_STREAM, minid=point, approximate=True)

    async def _entry(
        self,
        client: httpx.AsyncClient,
        hooks: list[dict[str, Any]],
        eid: bytes,
        event: dict[str, Any],
        body: bytes,
    ) -> None:
        await asyncio.gather(*(self._deliver(client, h, event, body) for h in hooks))
        await self._r.xack(keys.NOTIFY_STREAM, GROUP, eid)  # type: ignore[no-untyped-call]

    async def _deliver(
        self, client: httpx.AsyncClient, hook: dict[str, Any], event: dict[str, Any], body: bytes
    ) -> None:
        msg_id = message_id(event, hook)
        attempt = 0

        async def deliver_once() -> None:
            nonlocal attempt
            attempt += 1
            # Signed per attempt: a retry carries a fresh timestamp and the same message id.
            headers = {
                "Content-Type": "application/json",
                "X-OTA-Event-Id": event.get("id", ""),
                **webhook_signing.headers(active_secrets(hook), msg_id, now_ms() // 1000, body),
            }
            outcome: dict[str, Any] = {
                "event_id": event.get("id"),
                "kind": event.get("kind"),
                "attempt": attempt,
            }
            async with self._gate:
                try:
                    response = await client.post(hook["url"], content=body, headers=headers)
                    outcome["status_code"] = response.status_code
                    ok = 200 <= response.status_code < 300
                except httpx.HTTPError as exc:
                    outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
                    ok = False
            outcome.update(ok=ok, at_ms=now_ms(), final=ok or attempt == self._attempts)
            pipe = self._r.pipeline(transaction=False)
            pipe.lpush(keys.webhook_log(hook["id"]), orjson.dumps(outcome))
            pipe.ltrim(keys.webhook_log(hook["id"]), 0, LOG_CAP - 1)
            await pipe.execute()
            DELIVERIES.labels("ok" if ok else "failed").inc()
            if not ok:
                raise _DeliveryFailedError(outcome.get("error") or f"HTTP {outcome['status_code']}")

        try:
            await retry(
                "scheduler.webhook",
                deliver_once,
                on=_DeliveryFailedError,
                policy=self._policy,
                stop=self._stop,
                context={"webhook": hook["id"], "event_id": event.get("id")},
            )
        except _DeliveryFailedError:
            log.warning(
                "webhook gave up", extra={"webhook": hook["id"], "event_id": event.get("id")}
            )
