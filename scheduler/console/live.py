"""Live task updates over server-sent events, fed by the task's aggregates.

One poller per watched task reads the task's counts once per interval, renders one
frame, and hands the same bytes to every watcher: the server's cost is the same for one
browser or a hundred (per watcher only a queue put and a socket write). The poller
starts with the first watcher and stops with the last. A frame is sent only when it
changed; a comment keeps idle connections open through proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
HISTORY = 600  # samples kept per watched task for the rate chart
KEEPALIVE_S = 15.0
END = b""  # handed to watchers when the poller stopped: their stream ends, the browser reconnects

# (task id, samples so far) -> one SSE frame; appends this read's sample to the history
Render = Callable[[str, "deque[tuple[float, int]]"], Awaitable[bytes]]


def frame(event: str, data: str) -> bytes:
    """One SSE message; every line of `data` gets its own `data:` field."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


@dataclass
class _Channel:
    watchers: set[asyncio.Queue[bytes]] = field(default_factory=set)
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    last: bytes | None = None
    poller: asyncio.Task[None] | None = None


class Hub:
    def __init__(self, render: Render, interval_s: float) -> None:
        self._render, self._interval_s = render, interval_s
        self._channels: dict[str, _Channel] = {}
        self.reads = 0  # aggregate reads made, for tests and the benchmark

    def watchers(self, tid: str) -> int:
        channel = self._channels.get(tid)
        return len(channel.watchers) if channel else 0

    @contextlib.asynccontextmanager
    async def subscribe(self, tid: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        channel = self._channels.get(tid)
        if channel is None or channel.poller is None or channel.poller.cancelling():
            channel = self._channels[tid] = _Channel()
            channel.poller = asyncio.create_task(self._poll(tid, channel), name=f"live-{tid}")
            channel.poller.add_done_callback(lambda task: self._stopped(tid, channel, task))
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        if channel.last is not None:
            queue.put_nowait(channel.last)
        channel.watchers.add(queue)
        try:
            yield queue
        finally:
            channel.watchers.discard(queue)
            if not channel.watchers and channel.poller is not None:
                channel.poller.cancel()

    async def _poll(self, tid: str, channel: _Channel) -> None:
        while True:
            self.reads += 1
            data = await self._render(tid, channel.history)
            if data != channel.last:
                channel.last = data
                for queue in channel.watchers:
                    _offer(queue, data)
            await asyncio.sleep(self._interval_s)

    def _stopped(self, tid: str, channel: _Channel, task: asyncio.Task[None]) -> None:
        if self._channels.get(tid) is channel:
            del self._channels[tid]
        if not task.cancelled() and task.exception() is not None:
            log.error("live updates of task %s stopped", tid, exc_info=task.exception())
        for queue in channel.watchers:
            _offer(queue, END)


def _offer(queue: asyncio.Queue[bytes], data: bytes) -> None:
    """Only the newest frame matters: a slow watcher skips frames, never queues them."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(data)


async def stream(hub: Hub, tid: str) -> AsyncIterator[bytes]:
    """A watcher's SSE body: frames as they change, keep-alives between."""
    async with hub.subscribe(tid) as queue:
        yield b"retry: 3000\n\n"
        while True:
            try:
                data = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield f": {int(time.time())}\n\n".encode()
                continue
            if data == END:
                return
            yield data
