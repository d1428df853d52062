"""The overview: devices by version, online now, active tasks, recent failure causes, and
dead letters per reason over the last 24 h (`scheduler.deadletters`)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis.asyncio
from starlette.requests import Request
from starlette.responses import Response

from scheduler import keys
from scheduler.console import charts
from scheduler.console.web import Ctx, page
from scheduler.deadletters import DeadLetterCounts
from scheduler.taskdoc import load_task

VERSIONS_TTL_S = 10.0  # a census costs one SCARD per known version: reuse it a while
TOP_VERSIONS = 12
ACTIVE_SHOWN = 20
RECENT_TASKS = 200  # failure causes are summed over the newest tasks updated in 24 h
DAY_MS = 24 * 3600 * 1000

_census: dict[str, tuple[float, list[tuple[str, int]]]] = {}


async def known_versions(r: redis.asyncio.Redis[bytes], kind: str) -> list[bytes]:
    """Every version of `kind` devices reported. A registry written before the index of
    known versions existed has none: one scan of the keyspace fills it in."""
    known = keys.known_versions(kind)
    names = list(await r.smembers(known))
    if names:
        return names
    prefix = keys.version(kind, "").encode()
    names = [k[len(prefix) :] async for k in r.scan_iter(match=prefix + b"*", count=10_000)]
    if names:
        await r.sadd(known, *names)
    return names


async def census(r: redis.asyncio.Redis[bytes], kind: str) -> list[tuple[str, int]]:
    """(version, devices) for every version of `kind` some device is on, most common first."""
    names = await known_versions(r, kind)
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.scard(keys.version(kind, name.decode()))
    sizes = await pipe.execute() if names else []
    found = ((n.decode(), s) for n, s in zip(names, sizes, strict=True) if s)
    return sorted(found, key=lambda item: (-item[1], item[0]))


async def versions(ctx: Ctx, kind: str) -> list[tuple[str, int]]:
    """The `TOP_VERSIONS` most common versions of `kind` ('fw' or 'sw'), cached a while."""
    cached = _census.get(kind)
    if cached and time.monotonic() - cached[0] < VERSIONS_TTL_S:
        return cached[1]
    found = (await census(ctx.services.redis, kind))[:TOP_VERSIONS]
    if found:  # an empty census (a fresh registry) is not worth keeping
        _census[kind] = (time.monotonic(), found)
    return found


async def _recent_causes(ctx: Ctx) -> list[dict[str, Any]]:
    r = ctx.services.redis
    ids = await r.zrevrange(keys.TASKS, 0, RECENT_TASKS - 1)
    docs = await r.mget([keys.task(i.decode()) for i in ids]) if ids else []
    since = int(time.time() * 1000) - DAY_MS
    recent = [d["id"] for raw in docs if raw and (d := load_task(raw))["updated_ms"] >= since]
    total: Counter[int] = Counter()
    messages: dict[int, str] = {}
    for tid in recent:
        view = await ctx.services.tasks.view(tid)
        for cause in view["failure_causes"]:
            total[cause["code"]] += cause["count"]
            messages[cause["code"]] = cause["message"]
    return [{"code": c, "message": messages[c], "count": n} for c, n in total.most_common()]


@page
async def overview(request: Request, ctx: Ctx) -> Response:
    r = ctx.services.redis
    devices, online = await r.zcard(keys.DEVICES), await r.scard(keys.ONLINE)
    active_ids = sorted(m.decode() for m in await r.smembers(keys.ACTIVE_TASKS))[:ACTIVE_SHOWN]
    active = [await ctx.services.tasks.view(t) for t in active_ids]
    fw, sw = await versions(ctx, "fw"), await versions(ctx, "sw")
    return ctx.render(
        request,
        "overview.html",
        devices=devices,
        online=online,
        active=sorted(active, key=lambda t: -t["created_ms"]),
        fw_chart=charts.bars(fw, "devices by firmware version"),
        sw_chart=charts.bars(sw, "devices by software version"),
        causes=await _recent_causes(ctx),
        dead_letters=await DeadLetterCounts(r).last_day(int(time.time() * 1000)),
    )
