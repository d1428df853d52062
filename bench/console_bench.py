"""The operator console at scale, against the local stack.

- console.task_page_ms_1m: loading the task page (`GET /console/tasks/<id>`, logged in)
  of a task with --devices (1,000,000) target devices, while it runs: the server's time
  (its `Server-Timing` header: request in to first byte) and the full HTTP response as the
  client sees it; median of --loads loads after one warm-up;
- console.live_cpu_s_per_min_{0,1,100}: the scheduler's CPU-seconds per minute while 0, 1
  and --watchers (100) simulated browsers hold the task's live page open over SSE, each
  window --window-s long, --runs rounds, median per count; every watcher's frames are
  counted, so a figure without updates shows (frames per watcher are printed).

The task is made as an operator would make it: a --devices-line id list uploaded to
`POST /v1/target-lists`, then `POST /v1/tasks` with its `list_id` (the time both take is
printed as console.task_1m_accept_s). It runs at --rate-per-min (600) so its counts move
and every watcher gets a frame each live interval (1 s, the default); no workers run, so
released devices stay released.

The scheduler runs as its own process (`python -m scheduler`) on fresh topics and Redis
db 7, flushed before and after; the load comes from this process.

    .venv/bin/python bench/console_bench.py [--devices 1000000] [--loads 9]
        [--watchers 100] [--window-s 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from scheduler_process import KEY, Scheduler, cpu_s, machine_line, running_scheduler

from ops.rollout_api import create_task, upload_package, upload_targets

REDIS_DB = 7
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TIMING = re.compile(r"app;dur=([0-9.]+)")


async def login(client: httpx.AsyncClient) -> None:
    """A console session in the client's cookie jar, through the login form."""
    form = await client.get("/console/login")
    found = CSRF.search(form.text)
    if found is None:
        raise RuntimeError(f"no CSRF token in the login form: {form.status_code}")
    done = await client.post("/console/login", data={"csrf": found[1], "api_key": KEY})
    if done.status_code != 303 or "ota_console" not in client.cookies:
        raise RuntimeError(f"login refused: {done.status_code} {done.text[:200]}")


async def make_task(api: httpx.AsyncClient, devices: int, rate_per_min: int) -> tuple[str, float]:
    package_id = await upload_package(api, os.urandom(64 * 1024), "console-bench.bin")
    run = uuid.uuid4().hex[:6]
    ids = [f"cb-{run}-{i:07d}" for i in range(devices)]
    t0 = time.perf_counter()
    list_id = await upload_targets(api, ids)
    policy = {"rate_per_min": rate_per_min}
    tid = await create_task(api, package_id, list_id, policy, f"{devices} devices")
    return tid, time.perf_counter() - t0


async def page_loads(
    client: httpx.AsyncClient, tid: str, loads: int
) -> tuple[list[float], list[float]]:
    """(server ms, client ms) of each load, after one warm-up load."""
    server, total = [], []
    for i in range(loads + 1):
        t0 = time.perf_counter()
        answer = await client.get(f"/console/tasks/{tid}")
        took_ms = (time.perf_counter() - t0) * 1000
        if answer.status_code != 200 or 'id="progress"' not in answer.text:
            raise RuntimeError(f"task page: {answer.status_code} {answer.text[:200]}")
        found = TIMING.search(answer.headers.get("server-timing", ""))
        if found is None:
            raise RuntimeError("the console sent no Server-Timing header")
        if i:
            server.append(float(found[1]))
            total.append(took_ms)
        print(
            f"  load {i}: server {float(found[1]):.1f} ms, response {took_ms:.1f} ms, "
            f"{len(answer.content)} bytes{' (warm-up)' if not i else ''}",
            flush=True,
        )
    return server, total


async def watch(
    client: httpx.AsyncClient, tid: str, frames: list[int], index: int, ready: asyncio.Event
) -> None:
    """One simulated browser on the live page: counts the frames it is sent."""
    async with client.stream("GET", f"/console/tasks/{tid}/live") as stream:
        if stream.status_code != 200:
            raise RuntimeError(f"live page: {stream.status_code}")
        async for line in stream.aiter_lines():
            if line.startswith("event: progress"):
                frames[index] += 1
                ready.set()


async def live_window(
    sched: Scheduler, cookies: httpx.Cookies, tid: str, watchers: int, window_s: float
) -> tuple[float, float]:
    """(scheduler CPU-seconds per minute, frames per watcher) over one window."""
    assert sched.proc is not None
    frames = [0] * watchers
    readies = [asyncio.Event() for _ in range(watchers)]
    limits = httpx.Limits(max_connections=watchers + 1)
    async with httpx.AsyncClient(
        base_url=sched.url, cookies=cookies, timeout=None, limits=limits
    ) as client:
        tasks = [
            asyncio.create_task(watch(client, tid, frames, i, readies[i])) for i in range(watchers)
        ]
        try:
            if watchers:
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
            before = list(frames)
            cpu0, t0 = cpu_s(sched.proc.pid), time.perf_counter()
            await asyncio.sleep(window_s)  # the measured window itself: time is the input
            used, elapsed = cpu_s(sched.proc.pid) - cpu0, time.perf_counter() - t0
            for task in tasks:
                if task.done():
                    task.result()  # a watcher that failed fails the benchmark
            sent = [a - b for a, b in zip(frames, before, strict=True)]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    per_watcher = statistics.mean(sent) if sent else 0.0
    if watchers and min(sent) == 0:
        raise RuntimeError(f"a watcher got no frame in {window_s} s: {sent}")
    return used * 60 / elapsed, per_watcher


async def bench(args: argparse.Namespace, sched: Scheduler) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"server": [], "total": [], "accept": []}
    async with httpx.AsyncClient(
        base_url=sched.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=900
    ) as api:
        tid, accept_s = await make_task(api, args.devices, args.rate_per_min)
        results["accept"].append(accept_s)
        print(f"task {tid}: {args.devices} devices accepted in {accept_s:.1f} s", flush=True)
    async with httpx.AsyncClient(base_url=sched.url, timeout=60) as client:
        await login(client)
        server, total = await page_loads(client, tid, args.loads)
        results["server"], results["total"] = server, total
        for run in range(args.runs):
            for watchers in (0, 1, args.watchers):
                cpu, frames = await live_window(sched, client.cookies, tid, watchers, args.window_s)
                results.setdefault(f"cpu_{watchers}", []).append(cpu)
                results.setdefault(f"frames_{watchers}", []).append(frames)
                print(
                    f"  run {run + 1}, {watchers} watchers: {cpu:.2f} CPU-s/min, "
                    f"{frames:.1f} frames per watcher in {args.window_s:.0f} s",
                    flush=True,
                )
        server2, total2 = await page_loads(client, tid, args.loads)
        print(
            f"  after the live runs: server {statistics.median(server2):.1f} ms, "
            f"response {statistics.median(total2):.1f} ms",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=9)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate-per-min", type=int, default=600)
    args = parser.parse_args()
    load = os.getloadavg()
    with running_scheduler(REDIS_DB, "console-bench-") as sched:
        results = asyncio.run(bench(args, sched))
    print(f"\n{machine_line(load)}")
    print(f"console.task_1m_accept_s = {results['accept'][0]:.1f} s  ({args.devices} devices)")
    print(f"console.task_page_ms_1m = {statistics.median(results['server']):.1f} ms (server)")
    print(
        f"console.task_page_response_ms_1m = {statistics.median(results['total']):.1f} ms "
        "(full HTTP response)"
    )
    for watchers in (0, 1, args.watchers):
        runs = [round(x, 2) for x in results[f"cpu_{watchers}"]]
        print(
            f"console.live_cpu_s_per_min_{watchers} = "
            f"{statistics.median(results[f'cpu_{watchers}']):.2f} CPU-s/min  (runs {runs}, "
            f"frames per watcher {[round(x, 1) for x in results[f'frames_{watchers}']]})"
        )


if __name__ == "__main__":
    main()
