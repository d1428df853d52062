"""The one retry helper: a declared policy, jittered waits, an attempt limit, a metric.

`Backoff(base_s, cap_s, attempts)` says how long to wait before retry n (counted from 0
after a success): a uniformly random time in [0, min(cap, base * 2**n)] ("full jitter"),
so replicas that lost the same broker at the same moment do not come back in lockstep.
`attempts` bounds the retries (None = until stopped). The random source is injectable,
so tests are deterministic (`rand=lambda: 0.0` switches the waits off); it scales the
ceiling, so a documented schedule with another jitter keeps its shape on this policy
(`rand=lambda: rng.uniform(0.5, 1.5)`: +-50% around it, the webhooks' schedule).

`retry(operation, call, on=..., policy=...)` is the common loop: await `call()` until it
returns; after an error of the listed types (and `retriable(error)`, if given) wait the
policy's delay and call again; re-raise the error once the policy gives up, or raise
`StoppedError` if the `stop` event is set first. Every retry is logged (with the
caller's `context` fields) and counted in
`ota_retries_total{operation}` (one counter for every service; `operation` is a fixed
name per call site, such as `gateway.kafka_connect`, so the label stays bounded).
Loops that cannot hand their body to `retry` (a library calls back for the delay) take
`policy.delay_s(n)` and call `count_retry(operation)` themselves.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import Counter

from ota.metrics import REGISTRY

log = logging.getLogger(__name__)
T = TypeVar("T")

# Shared by every service (named ota_<what>, not ota_<service>_<what>): a process is one
# service, and the operation names the call site.
RETRIES = Counter(
    "ota_retries", "Operations tried again after an error", ("operation",), registry=REGISTRY
)


class StoppedError(Exception):
    """The stop event was set while waiting to retry."""


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.2
    cap_s: float = 10.0
    attempts: int | None = None
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"backoff needs 0 < base ({self.base_s}) <= cap ({self.cap_s})")
        if self.attempts is not None and self.attempts < 0:
            raise ValueError(f"backoff attempts must be >= 0 or None, not {self.attempts}")

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0 = the first retry)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempt, 62))
        return float(ceiling * self.rand())

    def gives_up(self, attempt: int) -> bool:
        """True when retry number `attempt` (0 = the first) is beyond the limit."""
        return self.attempts is not None and attempt >= self.attempts


def count_retry(operation: str) -> None:
    RETRIES.labels(operation).inc()


async def retry(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    policy: Backoff,
    stop: asyncio.Event | None = None,
    retriable: Callable[[BaseException], bool] | None = None,
    context: Mapping[str, object] | None = None,
) -> T:
    """`call()`'s result, retried on `on` errors by `policy` (see the module docstring)."""
    attempt = 0
    while True:
        try:
            return await call()
        except on as error:
            if policy.gives_up(attempt) or (retriable is not None and not retriable(error)):
                raise
            delay = policy.delay_s(attempt)
            attempt += 1
            count_retry(operation)
            log.warning(
                "retrying",
                extra={
                    **(context or {}),
                    "operation": operation,
                    "error": str(error) or type(error).__name__,
                    "retry": attempt,
                    "retry_in_s": round(delay, 3),
                },
            )
            await _wait(delay, stop)


async def _wait(delay_s: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(delay_s)
        return
    if stop.is_set():
        raise StoppedError
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
    except TimeoutError:
        return
    raise StoppedError
