"""Lua scripts called by digest (EVALSHA) inside pipelines, standalone or on a cluster.

redis-py's pipelined scripts ask SCRIPT EXISTS first (a second round trip per pipeline)
and, on a cluster pipeline, do not load a missing script at all. Here a call Redis
refuses with NOSCRIPT (restarted, scripts flushed, a new cluster master) did not run:
every script is loaded (SCRIPT LOAD goes to every master of a cluster) and only those
calls run again.

A cluster pipeline also hands back, unretried, what a node answers while a failover is
under way: CLUSTERDOWN (the node counts the cluster as failed for a moment) and TRYAGAIN
(keys of the slot moving). Redis refuses these before running the command, so sending
it again is safe: those steps are sent again after a jittered wait (RIDE_THROUGH, about
ten seconds in all), and the error is raised only if the cluster stays down.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import ClusterDownError, NoScriptError, TryAgainError

from ota.backoff import Backoff, count_retry

log = logging.getLogger(__name__)

# Queues one command on a pipeline (so that it can be queued again on another).
Step = Callable[["Pipeline[bytes]"], object]
Arg = bytes | str | int

# Refusals of a command that did not run and may run later: a failover under way.
REFUSED_FOR_NOW = (ClusterDownError, TryAgainError)
RIDE_THROUGH = Backoff(base_s=0.05, cap_s=1.0, attempts=20)


@cache
def sha(script: str) -> str:
    # The digest EVALSHA names a script by: an identifier, not a security use.
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def call(script: str, keys: Sequence[str], args: Sequence[Arg]) -> Step:
    """A step running `script` on `keys` (all of one cluster slot) with `args`."""
    return partial(_evalsha, sha(script), keys, args)


class ScriptRunner:
    """Runs steps, some of them calls of `scripts`, in one pipelined round trip."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        scripts: Sequence[str],
        *,
        policy: Backoff = RIDE_THROUGH,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        self.client = client
        self.scripts = tuple(scripts)
        self.policy, self.wait = policy, wait

    def run(self, steps: Sequence[Step], *, resend_all: bool = False) -> list[Any]:
        """The replies of `steps` (no transaction); raises the first error, after every
        step ran (or was refused for good). After a refusal only the refused steps are
        sent again, or all of them with `resend_all` (reads whose order matters)."""
        if not steps:
            return []
        replies = self._execute(steps)
        # One SCRIPT LOAD to begin with and one more after each wait: a failover may
        # put a master that never saw the scripts behind a slot.
        waits = loads = 0
        while True:
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            refused = [i for i, r in enumerate(replies) if isinstance(r, REFUSED_FOR_NOW)]
            if loads > waits:
                missing = []
            if self.policy.gives_up(waits):
                refused = []
            if not missing and not refused:
                break
            if missing:
                for script in self.scripts:
                    self.client.execute_command("SCRIPT LOAD", script)
                loads += 1
            if refused:
                self._wait_out(replies[refused[0]], waits)
                waits += 1
            again = list(range(len(steps))) if refused and resend_all else sorted(missing + refused)
            for i, reply in zip(again, self._execute([steps[i] for i in again]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _wait_out(self, refusal: object, attempt: int) -> None:
        delay = self.policy.delay_s(attempt)
        count_retry("redis.cluster_refusal")
        log.warning(
            "redis cluster refused for now; sending again",
            extra={"error": str(refusal), "retry": attempt + 1, "retry_in_s": round(delay, 3)},
        )
        self.wait(delay)

    def _execute(self, steps: Sequence[Step]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for step in steps:
            step(pipe)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies


def command(*args: Arg) -> Step:
    """A step sending one plain command (`GET key`, `MGET key...` of one slot). Raw, as
    a cluster pipeline refuses its `mget` method (keys of any slots) while an MGET of
    keys of one slot is a command like any other."""
    return partial(_command, args)


def _command(args: Sequence[Arg], pipe: Pipeline[bytes]) -> None:
    pipe.execute_command(*args)  # type: ignore[no-untyped-call]  # untyped in the stubs


def _evalsha(digest: str, keys: Sequence[str], args: Sequence[Arg], pipe: Pipeline[bytes]) -> None:
    pipe.evalsha(digest, len(keys), *keys, *args)
