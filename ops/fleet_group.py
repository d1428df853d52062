"""The fleet front-end of the demo and the rollout benchmark: a simulated fleet run as one
or more `python -m ops.demo_fleet` child processes, seen as one fleet.

`FleetGroup` splits the fleet into contiguous index slices (`slices`), one process each,
and merges their ready and report lines (`devices.report.merge`); `register_fleet` and
`registrar` register the fleet's derived secrets through the API's bulk import so the
broker lets the devices in, and `forget_fleet` removes them after a run. The fleet's
target list and task: `ops.rollout_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from devices.fleet import fleet_credentials
from devices.report import merge
from ops.demo_env import StackPlan
from ops.demo_stack import StackError
from ota.redis_clients import make_redis
from ota.settings import CommonSettings
from scheduler.credentials import record_key

# From this many devices a fleet is simulated by two processes (two cores) by default.
SPLIT_FLEET_AT = 5_000


def default_fleet_processes(size: int) -> int:
    return 2 if size >= SPLIT_FLEET_AT else 1


def slices(size: int, parts: int) -> list[tuple[int, int]]:
    """(first index, count) of `parts` contiguous slices of a fleet, sizes within one."""
    parts = max(1, min(parts, size))
    base, extra = divmod(size, parts)
    out, first = [], 0
    for n in range(parts):
        count = base + (1 if n < extra else 0)
        out.append((first, count))
        first += count
    return out


def merge_ready(lines: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for line in lines:
        for kind, count in (line.get("kinds") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + count
    return {
        "ready": True,
        "online": sum(int(line.get("online", 0)) for line in lines),
        "connect_s": max(float(line.get("connect_s", 0.0)) for line in lines),
        "kinds": dict(sorted(kinds.items())),
    }


class FleetProcess:
    """`python -m ops.demo_fleet` as a child; JSON lines on its stdout."""

    def __init__(self, env: dict[str, str], **options: object) -> None:
        """`options` become the fleet's flags: `mux_connections=4` -> `--mux-connections 4`,
        `own_downlinks=True` -> `--own-downlinks` (False: left out)."""
        self.command = [sys.executable, "-m", "ops.demo_fleet"]
        for name, value in options.items():
            flag = f"--{name.replace('_', '-')}"
            if isinstance(value, bool):
                self.command += [flag] if value else []
            else:
                self.command += [flag, str(value)]
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.last: dict[str, Any] = {}
        self._following: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float) -> dict[str, Any]:
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        ready = await asyncio.wait_for(self._next("ready"), timeout_s)
        self._following = asyncio.get_running_loop().create_task(self._follow())
        return ready

    async def _next(self, key: str) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                raise StackError(f"the fleet exited ({self.process.returncode}) before {key}")
            line: dict[str, Any] = json.loads(raw)
            if key in line or "final" in line:
                return line

    async def _follow(self) -> None:
        with contextlib.suppress(StackError, ValueError):
            while True:
                line = await self._next("report")
                if "final" in line:
                    self.last = line["final"]
                    return
                self.last = line["report"]

    async def stop(self) -> dict[str, Any]:
        if self.process is None or self.process.returncode is not None:
            return self.last
        assert self.process.stdin is not None
        self.process.stdin.close()  # the fleet prints its final report, then exits
        try:
            await asyncio.wait_for(self.process.wait(), 60)
            if self._following is not None:
                await asyncio.wait_for(self._following, 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        return self.last


class FleetGroup:
    """One fleet simulated by `processes` FleetProcesses over contiguous index slices;
    their ready and report lines merged into one (`devices.report.merge`). Multiplexed
    slices subscribe to their own devices' down topics, so each gets only its commands."""

    def __init__(
        self, env: dict[str, str], *, size: int, processes: int = 1, **options: object
    ) -> None:
        parts = slices(size, processes)
        own = len(parts) > 1 and options.get("mode") == "multiplexed"
        self.members = [
            FleetProcess(env, size=count, first=first, own_downlinks=own, **options)
            for first, count in parts
        ]

    def pids(self) -> list[int]:
        return [m.process.pid for m in self.members if m.process is not None]

    async def start(self, timeout_s: float) -> dict[str, Any]:
        """Start every process and wait until all are ready (stopping them all if one fails)."""
        try:
            readies = await asyncio.gather(*(m.start(timeout_s) for m in self.members))
        except BaseException:
            await self.stop()
            raise
        return merge_ready(list(readies))

    @property
    def last(self) -> dict[str, Any]:
        return merge(m.last for m in self.members)

    async def stop(self) -> dict[str, Any]:
        return merge(await asyncio.gather(*(m.stop() for m in self.members)))


async def register_fleet(plan: StackPlan, device_ids: list[str]) -> str:
    """Registers the simulated devices' secrets (derived from the fleet's seed) through the
    bulk import, so that the broker lets them in; the import's summary line. Letting
    devices in is an admin operation: the stack's admin key does it."""
    headers = {"Authorization": f"Bearer {plan.admin_key}"}
    async with httpx.AsyncClient(base_url=plan.api_url, headers=headers, timeout=600) as api:
        response = await api.post("/v1/credentials/import", content=fleet_credentials(device_ids))
    response.raise_for_status()
    summary = [line for line in response.text.splitlines() if line.startswith("#")]
    if not summary or "aborted" in summary[-1]:
        raise StackError(f"registering the fleet failed: {response.text[-500:]}")
    return summary[-1].lstrip("# ")


def forget_fleet(env: Mapping[str, str], device_ids: Sequence[str]) -> int:
    """Removes the credentials `register_fleet` stored for a finished run's devices; how
    many. The store is the broker's, shared by every stack on it (not the run's own Redis
    db, which a run flushes), so each run's fleet would otherwise stay in it for good."""
    settings = CommonSettings.from_env(env)
    client = make_redis(settings, env["OTA_CREDENTIALS_REDIS_URL"])
    removed = 0
    try:
        for at in range(0, len(device_ids), FORGET_CHUNK):
            part = device_ids[at : at + FORGET_CHUNK]
            removed += int(client.unlink(*(record_key(d) for d in part)))
    finally:
        client.close()
    return removed


FORGET_CHUNK = 10_000


def registrar(plan: StackPlan) -> Callable[[list[str]], Awaitable[str]]:
    """`FleetConfig.register` for a fleet on `plan`'s stack: the API's bulk import."""

    async def register(device_ids: list[str]) -> str:
        return await register_fleet(plan, device_ids)

    return register
