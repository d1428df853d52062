"""kafka-python's threaded producer, awaited from asyncio without blocking the loop.

`KafkaProducer.send` only appends to a batch; its background thread delivers batches
(linger and batch size decide when, never a flush per message) and resolves each
record's future on that thread. Completions are collected under a lock and handed to
the event loop in one `call_soon_threadsafe` per burst, not one wake-up per record,
which matters at tens of thousands of records a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

_Completion = tuple["asyncio.Future[None]", BaseException | None]


class ProduceError(Exception):
    """Kafka did not take a record; `retriable` says whether sending it again may work."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class AsyncProducer:
    def __init__(self, producer: KafkaProducer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._lock = threading.Lock()
        self._done: list[_Completion] = []
        self._scheduled = False

    def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        """A future resolved once Kafka acknowledged the record (acks=all)."""
        future: asyncio.Future[None] = self._loop.create_future()
        try:
            pending = self._producer.send(topic, value=value, key=key)
        except KafkaError as exc:
            future.set_exception(_translate(exc))
            return future
        pending.add_callback(self._on_success, future)
        pending.add_errback(self._on_error, future)
        return future

    def _on_success(self, future: asyncio.Future[None], _metadata: Any) -> None:
        self._complete(future, None)

    def _on_error(self, future: asyncio.Future[None], exc: BaseException) -> None:
        self._complete(future, exc)

    def _complete(self, future: asyncio.Future[None], exc: BaseException | None) -> None:
        # Runs on the producer's thread (or inline when the record failed at once).
        with self._lock:
            self._done.append((future, exc))
            if self._scheduled:
                return
            self._scheduled = True
        # A closed loop raises RuntimeError: nobody awaits these futures any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._scheduled = False
        for future, exc in done:
            if future.done():
                continue
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(_translate(exc))

    async def close(self, timeout_s: float) -> None:
        """Deliver what is batched (bounded by `timeout_s`), then close the producer."""
        await asyncio.to_thread(self._producer.close, timeout=timeout_s)


def _translate(exc: BaseException) -> ProduceError:
    retriable = bool(getattr(exc, "retriable", False)) or type(exc).__name__ in (
        "KafkaTimeoutError",
        "NoBrokersAvailable",
    )
    return ProduceError(f"{type(exc).__name__}: {exc}", retriable=retriable)
