"""The gateway's record of device broker outages: its own link to the broker dropped and
came back.

Every device's connection runs through the broker, so when the gateway's link drops
without the gateway closing it (the broker crashed or restarted, or the network between
them failed), the devices most likely lost theirs too, and a crashed broker announces no
offline. The gateway records the outage in Redis (ota.broker_outage) at once, marked
ongoing (written again while it lasts), and its end once the link is back: the workers'
sweepers hold the deadlines of devices whose connection is from before it until they
reconnect (workers.broker_hold). A broker that kept the gateway's session (CONNACK
session present) did not restart: it was the gateway's own link that failed, the broker
went on announcing each device's offline as usual, and nothing is held: the ongoing
record is withdrawn. The record spares devices a window's timeout and nothing depends on
it otherwise: an ongoing write that fails is tried on the next refresh, the end is
retried a few times, then logged and let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis

from gateway import metrics
from ota import broker_outage
from ota.backoff import Backoff, StoppedError, retry
from ota.broker_outage import ONGOING_REFRESH_S, BrokerOutage
from ota.clock import now_ms
from ota.redis_clients import REDIS_ERRORS

log = logging.getLogger(__name__)

RECORD_BACKOFF = Backoff(0.5, 5.0, attempts=5)


class OutageStore(Protocol):
    """Where outages are recorded (blocking calls: they run on a worker thread)."""

    def record(self, outage: BrokerOutage) -> None: ...

    def withdraw(self, outage: BrokerOutage) -> None:
        """Remove the record of `outage` if it is still the one stored."""


class RedisOutageStore:
    """The outage record in Redis, where the workers' sweepers read it; the client is made
    on the first outage, the only time it is needed."""

    def __init__(self, connect: Callable[[], redis.Redis[bytes]]) -> None:
        self._connect = connect
        self._client: redis.Redis[bytes] | None = None

    def _redis(self) -> redis.Redis[bytes]:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def record(self, outage: BrokerOutage) -> None:
        expires = outage.expires_at_ms(now_ms())
        self._redis().set(broker_outage.KEY, broker_outage.encode(outage), pxat=expires)

    def withdraw(self, outage: BrokerOutage) -> None:
        # Read, then delete: another gateway's record written in between is lost with it,
        # which costs only that outage's hold.
        client = self._redis()
        if client.get(broker_outage.KEY) == broker_outage.encode(outage):
            client.delete(broker_outage.KEY)


@dataclass
class _Down:
    since_ms: int
    back: asyncio.Event = field(default_factory=asyncio.Event)
    until_ms: int = 0
    session_kept: bool = False


class BrokerOutages:
    """Follows the link's state and records each outage in `store`; `refresh_s` is how
    often an ongoing one is written again."""

    def __init__(
        self,
        store: OutageStore,
        stop: asyncio.Event,
        refresh_s: float = ONGOING_REFRESH_S,
    ) -> None:
        self._store, self._stop, self._refresh_s = store, stop, refresh_s
        self._down: _Down | None = None
        self._following: set[asyncio.Task[None]] = set()

    @property
    def down_since_ms(self) -> int | None:
        return None if self._down is None else self._down.since_ms

    def link_changed(self, up: bool, session_kept: bool = False) -> None:
        """The link's state changed (called on the event loop); `session_kept`: the
        broker's CONNACK said it kept the gateway's session."""
        down = self._down
        if up:
            if down is not None:
                self._down = None
                down.until_ms, down.session_kept = now_ms(), session_kept
                down.back.set()
            return  # without a drop seen (the first connect), there is nothing to record
        if down is not None or self._stop.is_set():
            return  # a failed reconnect attempt, or the gateway closing its own link
        self._down = down = _Down(now_ms())
        task = asyncio.get_running_loop().create_task(self._follow(down))
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    def close(self) -> None:
        """Stop following an outage (the gateway is stopping)."""
        for task in self._following:
            task.cancel()

    async def _follow(self, down: _Down) -> None:
        ongoing = BrokerOutage(down.since_ms)
        while not down.back.is_set():
            try:
                await asyncio.to_thread(self._store.record, ongoing)
            except REDIS_ERRORS as exc:
                log.warning("the ongoing broker outage is not recorded", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(down.back.wait(), self._refresh_s)
            if self._stop.is_set():
                return
        if down.session_kept:
            log.warning(
                "the broker link is back and the broker kept the session: not a broker outage",
                extra={"down_s": (down.until_ms - down.since_ms) / 1000},
            )
            await self._write(lambda: self._store.withdraw(ongoing), ongoing)
            return
        metrics.BROKER_OUTAGES.inc()
        outage = BrokerOutage(down.since_ms, down.until_ms)
        if await self._write(lambda: self._store.record(outage), outage):
            log.warning(
                "the broker link is back: deadlines of devices it disconnected are held until"
                " they reconnect",
                extra={
                    "since_ms": outage.since_ms,
                    "until_ms": outage.until_ms,
                    "down_s": (down.until_ms - down.since_ms) / 1000,
                },
            )

    async def _write(self, write: Callable[[], None], outage: BrokerOutage) -> bool:
        """`write` retried while Redis does not answer; False once given up (logged)."""
        context = {"since_ms": outage.since_ms, "until_ms": outage.until_ms}
        try:
            await retry(
                "gateway.broker_outage_record",
                lambda: asyncio.to_thread(write),
                on=REDIS_ERRORS,
                policy=RECORD_BACKOFF,
                stop=self._stop,
                context=context,
            )
        except StoppedError:
            return False
        except REDIS_ERRORS as exc:
            log.error(
                "the broker outage's record is not updated: the ongoing record holds"
                " deadlines until it expires",
                extra={**context, "error": str(exc)},
            )
            return False
        return True
