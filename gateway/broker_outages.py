"""The gateway's record of device broker outages: its own link to the broker dropped and
came back.

Every device's connection runs through the broker, so when the gateway's link drops
without the gateway closing it (the broker crashed or restarted, or the network between
them failed), the devices most likely lost theirs too, and a crashed broker announces no
offline. The gateway records the outage in Redis (ota.broker_outage) at once, marked
ongoing (written again while it lasts), and its end once the link is back: the workers'
sweepers hold the deadlines of devices whose connection is from before it until they
reconnect (workers.broker_hold). The record spares devices a window's timeout and nothing
depends on it otherwise: an ongoing write that fails is tried on the next refresh, the end
is retried a few times, then logged and let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import metrics
from ota.backoff import Backoff, StoppedError, retry
from ota.broker_outage import ONGOING_REFRESH_S, BrokerOutage
from ota.clock import now_ms
from ota.redis_clients import REDIS_ERRORS

log = logging.getLogger(__name__)

RECORD_BACKOFF = Backoff(0.5, 5.0, attempts=5)


@dataclass
class _Down:
    since_ms: int
    back: asyncio.Event = field(default_factory=asyncio.Event)
    until_ms: int = 0


class BrokerOutages:
    """Follows the link's state and records each outage through `record` (blocking: it
    runs on a worker thread); `refresh_s` is how often an ongoing one is written again."""

    def __init__(
        self,
        record: Callable[[BrokerOutage], None],
        stop: asyncio.Event,
        refresh_s: float = ONGOING_REFRESH_S,
    ) -> None:
        self._record, self._stop, self._refresh_s = record, stop, refresh_s
        self._down: _Down | None = None
        self._following: set[asyncio.Task[None]] = set()

    @property
    def down_since_ms(self) -> int | None:
        return None if self._down is None else self._down.since_ms

    def link_changed(self, up: bool) -> None:
        """The link's state changed (called on the event loop)."""
        down = self._down
        if up:
            if down is not None:
                self._down = None
                down.until_ms = now_ms()
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
                await asyncio.to_thread(self._record, ongoing)
            except REDIS_ERRORS as exc:
                log.warning("the ongoing broker outage is not recorded", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(down.back.wait(), self._refresh_s)
            if self._stop.is_set():
                return
        metrics.BROKER_OUTAGES.inc()
        await self._record_end(BrokerOutage(down.since_ms, down.until_ms))

    async def _record_end(self, outage: BrokerOutage) -> None:
        context = {"since_ms": outage.since_ms, "until_ms": outage.until_ms}
        try:
            await retry(
                "gateway.broker_outage_record",
                lambda: asyncio.to_thread(self._record, outage),
                on=REDIS_ERRORS,
                policy=RECORD_BACKOFF,
                stop=self._stop,
                context=context,
            )
        except StoppedError:
            return
        except REDIS_ERRORS as exc:
            log.error(
                "the broker outage's end is not recorded: deadlines of devices it"
                " disconnected are held only while the ongoing record lives",
                extra={**context, "error": str(exc)},
            )
            return
        down_s = (outage.until_ms or outage.since_ms) - outage.since_ms
        log.warning(
            "the broker link is back: deadlines of devices it disconnected are held until"
            " they reconnect",
            extra={**context, "down_s": down_s / 1000},
        )
