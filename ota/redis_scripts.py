"""Lua scripts called by digest (EVALSHA) inside pipelines, standalone or on a cluster.

redis-py's pipelined scripts ask SCRIPT EXISTS first (a second round trip per pipeline)
and, on a cluster pipeline, do not load a missing script at all. Here a call Redis
refuses with NOSCRIPT (restarted, scripts flushed, a new cluster master) did not run:
every script is loaded (SCRIPT LOAD goes to every master of a cluster) and only those
calls run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

# Queues one command on a pipeline (so that it can be queued again on another).
Step = Callable[["Pipeline[bytes]"], object]
Arg = bytes | str | int


@cache
def sha(script: str) -> str:
    # The digest EVALSHA names a script by: an identifier, not a security use.
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def call(script: str, keys: Sequence[str], args: Sequence[Arg]) -> Step:
    """A step running `script` on `keys` (all of one cluster slot) with `args`."""
    return partial(_evalsha, sha(script), keys, args)


class ScriptRunner:
    """Runs steps, some of them calls of `scripts`, in one pipelined round trip."""

    def __init__(self, client: redis.Redis[bytes], scripts: Sequence[str]) -> None:
        self.client = client
        self.scripts = tuple(scripts)

    def run(self, steps: Sequence[Step]) -> list[Any]:
        """The replies of `steps` (no transaction); raises the first error, after every
        step ran."""
        if not steps:
            return []
        replies = self._execute(steps)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lost:
            for script in self.scripts:
                self.client.execute_command("SCRIPT LOAD", script)
            for i, reply in zip(lost, self._execute([steps[i] for i in lost]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _execute(self, steps: Sequence[Step]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for step in steps:
            step(pipe)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies


def _evalsha(digest: str, keys: Sequence[str], args: Sequence[Arg], pipe: Pipeline[bytes]) -> None:
    pipe.evalsha(digest, len(keys), *keys, *args)
