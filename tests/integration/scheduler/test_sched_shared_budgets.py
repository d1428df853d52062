"""The failure budgets every scheduler replica shares through Redis: the console's login
throttle per address (scheduler/console/login_throttle.py) and the audit trail's budget
for refused unauthenticated attempts (scheduler/shared_budget.py). Two instances, each
with its own Redis client, stand for two replicas; they share a private redis-server
(tests/redis_kit.py) that reports expired keys, so a test awaits an expiry instead of
sleeping. Time is moved on by shortening a debt key's time to live: Redis's clock is the
only one these budgets read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeAlias

import pytest
import redis.asyncio

from ota.metrics import REGISTRY
from scheduler.audit_budget import FailureBudget, Recording
from scheduler.console.login_guard import LoginLimits
from scheduler.console.login_throttle import LoginThrottle, address_key
from scheduler.shared_budget import DEBT_KEY, UNTOLD_KEY, SharedFailureBudget
from tests.redis_kit import PrivateRedis, running_redis

ATTACKER, OTHER = "198.51.100.7", "203.0.113.9"
EXPIRED = "__keyevent@0__:expired"
Client: TypeAlias = "redis.asyncio.Redis[bytes]"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with running_redis(tmp_path / "redis", extra=["notify-keyspace-events Ex"]) as running:
        yield running


@pytest.fixture
async def clients(server: PrivateRedis) -> AsyncIterator[tuple[Client, Client, Client]]:
    """One client per replica, and one for the test to look with."""
    made: list[Client] = [redis.asyncio.Redis.from_url(server.url()) for _ in range(3)]
    try:
        yield made[0], made[1], made[2]
    finally:
        for client in made:
            await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


async def advance(r: Client, key: str, ms: int) -> None:
    """As if `ms` had passed for the bucket of `key`: its debt is paid down by that much."""
    left = await r.pttl(key)
    if left > ms:
        await r.pexpire(key, left - ms)
    else:
        await r.delete(key)


def fallbacks(budget: str) -> float:
    sample = "ota_scheduler_shared_budget_fallbacks_total"
    return REGISTRY.get_sample_value(sample, {"budget": budget}) or 0.0


async def test_failed_logins_split_across_two_replicas_throttle_the_address_on_both(
    clients: tuple[Client, Client, Client],
) -> None:
    first, second, r = clients
    limits = LoginLimits(burst=10, per_min=6.0)
    replicas = LoginThrottle(first, limits), LoginThrottle(second, limits)
    for n in range(10):
        replica = replicas[n % 2]
        assert await replica.retry_after_s(ATTACKER) == 0.0
        await replica.failed(ATTACKER)
    for replica in replicas:
        assert await replica.retry_after_s(ATTACKER) == pytest.approx(10.0, abs=1.0)
        # Five each: counted per replica, neither would have throttled the address yet.
        assert replica.local.retry_after_s(ATTACKER, time.monotonic()) == 0.0
        assert await replica.retry_after_s(OTHER) == 0.0
    assert 99_000 < await r.pttl(address_key(ATTACKER)) <= 100_000  # burst x 10 s
    assert await r.dbsize() == 1  # one key per address that failed, none for the other

    await advance(r, address_key(ATTACKER), 10_000)  # a try is back, on both
    assert [await replica.retry_after_s(ATTACKER) for replica in replicas] == [0.0, 0.0]
    await replicas[1].failed(ATTACKER)
    assert await replicas[0].retry_after_s(ATTACKER) == pytest.approx(10.0, abs=1.0)


async def test_an_address_key_expires_when_its_bucket_is_full_again(
    clients: tuple[Client, Client, Client],
) -> None:
    first, second, r = clients
    limits = LoginLimits(burst=2, per_min=600.0)  # a try back every 100 ms
    replicas = LoginThrottle(first, limits), LoginThrottle(second, limits)
    addresses = [f"192.0.2.{n}" for n in range(40)]
    async with r.pubsub() as events:
        await events.subscribe(EXPIRED)
        for n, address in enumerate(addresses):
            await replicas[n % 2].failed(address)
        for _ in range(6):  # hammering past the burst owes no more than the burst
            await replicas[0].failed(ATTACKER)
        assert await r.dbsize() == len(addresses) + 1
        assert 0 < await r.pttl(address_key(addresses[0])) <= 100
        assert 100 < await r.pttl(address_key(ATTACKER)) <= 200

        waiting = {address_key(a).encode() for a in [*addresses, ATTACKER]}
        async with asyncio.timeout(30):
            while waiting:
                event = await events.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if event is not None:
                    waiting.discard(event["data"])
    assert await r.dbsize() == 0


async def test_two_replicas_spend_the_audit_budget_as_one_would(
    clients: tuple[Client, Client, Client],
) -> None:
    first, second, r = clients
    burst, per_min = 4, 0.6  # a record every 100 s: the test's own time never counts
    replicas = (
        SharedFailureBudget(first, burst, per_min),
        SharedFailureBudget(second, burst, per_min),
    )
    alone = FailureBudget(burst, per_min, now=0.0)
    times_s = [0, 0, 0, 0, 50, 50, 50, 250, 260, 360, 500]
    expected = [alone.record_failure(float(t)) for t in times_s]
    assert expected == [Recording(True, 0)] * 4 + [Recording(False, 0)] * 3 + [
        Recording(True, 3),  # two tokens back: the count of three, then its own
        Recording(False, 0),
        Recording(False, 2),  # one token: the count, which includes this one
        Recording(True, 0),
    ]
    shared, last_s = [], 0
    for n, at_s in enumerate(times_s):
        await advance(r, DEBT_KEY, (at_s - last_s) * 1000)
        last_s = at_s
        shared.append(await replicas[n % 2].record_failure())
    assert shared == expected
    assert await r.exists(UNTOLD_KEY) == 0  # all told
    assert 0 < await r.pttl(DEBT_KEY) <= burst * 100_000


async def test_while_redis_is_away_each_replica_falls_back_on_its_own_budget(
    server: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    r: Client = redis.asyncio.Redis.from_url(server.url())
    throttle = LoginThrottle(r, LoginLimits(burst=3, per_min=6.0))
    budget = SharedFailureBudget(r, burst=2, per_min=0.6)
    logins_before, audit_before = fallbacks("console_logins"), fallbacks("audit_failures")
    try:
        assert await budget.record_failure() == Recording(True, 0)
        server.stop()
        for _ in range(3):
            assert await throttle.retry_after_s(ATTACKER) == 0.0
            await throttle.failed(ATTACKER)
        assert await throttle.retry_after_s(ATTACKER) > 9.0  # never unthrottled
        local = [await budget.record_failure() for _ in range(5)]
        assert local == [Recording(True, 0)] * 2 + [Recording(False, 0)] * 3
        assert throttle.fallback.active
        assert budget.fallback.active
        assert fallbacks("console_logins") - logins_before == 7  # 4 checks, 3 failures
        assert fallbacks("audit_failures") - audit_before == 5
        away = [m for m in caplog.messages if m.startswith("Redis does not answer")]
        assert len(away) == 2  # once per budget, not once per decision

        server.start()  # without persistence: every key is gone, the bucket full again
        # The three failures counted while Redis was away are told with the next.
        assert await budget.record_failure() == Recording(True, 3)
        assert await budget.record_failure() == Recording(False, 0)  # the shared two spent
        assert int(await r.get(UNTOLD_KEY) or 0) == 1
        # The replica's own guard still knows the address that Redis forgot.
        assert await r.exists(address_key(ATTACKER)) == 0
        assert await throttle.retry_after_s(ATTACKER) > 9.0
        assert not throttle.fallback.active
        assert not budget.fallback.active
    finally:
        await r.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
