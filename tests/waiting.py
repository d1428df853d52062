"""Waiting in synchronous test code for a condition the test cannot be told about."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Return once `predicate()` holds; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        time.sleep(0.02)


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """`wait_until` for async tests: the event loop runs on while the predicate is false."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(0.05)
