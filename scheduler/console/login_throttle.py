"""The console's failed-login throttle per client address (scheduler/console/login_guard.py),
one for every scheduler replica: each address's bucket is kept in the scheduler's Redis, so
behind a load balancer an address gets its `burst` failed logins in all, not per replica.

Each address is one key, `ota:{sched}:login-debt:<digest of the address>`, whose time to live
is the address's debt (scheduler/debt_bucket.py): reading it (PTTL) says whether the address
may try, and a failed login adds to it in one Lua script, only while the address has a
try left. So a key lives at most burst x 60/per_min s (100 s by default) after the
address's last failure, however hard it is hammered: the keys are about 100 B for each
address that failed in that time, and idle addresses take no room. The digest gives every key one
length whatever the address is (behind a trusted proxy it comes from X-Forwarded-For).

Every replica also keeps its own `LoginGuard`, spent with every failure, and an address
waits for the longer of the two. When Redis does not answer, that guard alone decides:
the throttle then holds per replica (at worst N times the budget for N replicas) for as
long as Redis is away. A security-minded operator expects guessing to stay
throttled, and expects to still be able to log in with a configured key while Redis is
being repaired: failing closed would lock every operator out of the console during an
outage, to deny an attacker a bounded gain. Keeping the local guard spent all along also
means it already knows this replica's recent failures when Redis goes away, or comes back
having lost them.
"""

from __future__ import annotations

import hashlib
import time

import redis.asyncio
from redis.exceptions import RedisError

from scheduler import keys
from scheduler.console.login_guard import LoginGuard, LoginLimits
from scheduler.debt_bucket import TAKE_LUA
from scheduler.shared_budget import Fallback

KEY_PREFIX = keys.LOGIN_DEBT

# KEYS[1]: the address's debt; ARGV[1]: step_ms; ARGV[2]: spare_ms. Takes the address's
# try if it has one left (TAKE_LUA).
_FAILED = TAKE_LUA + "return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)\n"


def address_key(client: str) -> str:
    return KEY_PREFIX + hashlib.blake2b(client.encode(), digest_size=16).hexdigest()


class LoginThrottle:
    def __init__(self, r: redis.asyncio.Redis[bytes], limits: LoginLimits) -> None:
        self.limits = limits
        self._r, self._rate = r, limits.rate
        self._failed = r.register_script(_FAILED)
        self.local = LoginGuard(limits)
        self.fallback = Fallback("console_logins")

    async def retry_after_s(self, client: str) -> float:
        """0 when `client` may try to log in now, else the seconds until it may."""
        local = self.local.retry_after_s(client, time.monotonic())
        try:
            debt_ms = await self._r.pttl(address_key(client))  # -2: no key, nothing owed
        except RedisError as exc:
            self.fallback.started(exc)
            return local
        self.fallback.ended()
        return max(local, self._rate.wait_ms(max(debt_ms, 0)) / 1000.0)

    async def failed(self, client: str) -> None:
        """A failed attempt by `client` spends one of its tries, on every replica."""
        self.local.failed(client, time.monotonic())
        try:
            await self._failed(
                keys=[address_key(client)], args=[self._rate.step_ms, self._rate.spare_ms]
            )
        except RedisError as exc:
            self.fallback.started(exc)
            return
        self.fallback.ended()
