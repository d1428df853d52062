"""The console's overview with a registry of a million devices, against the local stack.

- console.overview_census_ms_1m: one census of firmware versions (the overview's chart:
  devices per version) as the overview computes it, from the registry's index of known
  versions (one SCARD per version); median of --runs;
- console.overview_census_scan_ms_1m: the same census found by scanning the keyspace for
  version sets, which is what a registry without the index costs (and what the census did
  before the index existed); median of --runs;
- console.overview_page_ms_1m: `GET /console/` (logged in) as the server times it (its
  `Server-Timing` header): the first load computes the census, later ones reuse it for
  10 s; the first load and the median of --loads later loads.

The registry is filled as in production: --devices version reports (firmware from
--versions versions, software from 3) produced to the scheduler's inbox, which the
scheduler applies; the time that takes is printed as console.registry_ingest_per_s.

The scheduler runs as its own process (`python -m scheduler`) on fresh topics and Redis
db 7, flushed before and after; the census runs in this process on the same Redis.

    .venv/bin/python bench/overview_bench.py [--devices 1000000] [--versions 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import redis.asyncio
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).parent))
from console_bench import TIMING, login
from scheduler_process import Scheduler, machine_line, running_scheduler

from ota.records import DeviceEventRecord, encode
from scheduler import keys
from scheduler.console.pages_overview import census

REDIS_DB = 7


def fill_registry(sched: Scheduler, devices: int, versions: int) -> None:
    """Produce one version report per device to the scheduler's inbox."""
    producer = KafkaProducer(bootstrap_servers=sched.bootstrap, linger_ms=20, acks=1)
    try:
        at_ms = int(time.time() * 1000)
        for n in range(devices):
            device = f"ov-{n:07d}"
            report = DeviceEventRecord(
                device,
                "version_report",
                {"fw_version": f"fw-{n % versions}", "sw_version": f"sw-{n % 3}"},
                at_ms=at_ms,
            )
            producer.send(sched.prefix + "ota.inbox", key=device.encode(), value=encode(report))
        producer.flush()
    finally:
        producer.close()


async def wait_registry(r: redis.asyncio.Redis[bytes], devices: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (known := await r.zcard(keys.DEVICES)) < devices:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the registry holds {known} of {devices} devices")
        await asyncio.sleep(0.5)  # polled like an operator would


async def census_ms(r: redis.asyncio.Redis[bytes], runs: int, scan: bool) -> list[float]:
    took = []
    for _ in range(runs):
        if scan:
            await r.delete(keys.known_versions("fw"))  # the census falls back to a scan
        t0 = time.perf_counter()
        found = await census(r, "fw")
        took.append((time.perf_counter() - t0) * 1000)
        if not found:
            raise RuntimeError("the census found no versions")
    return took


async def page_loads(sched: Scheduler, loads: int) -> list[float]:
    """Server ms of the first load and of `loads` more."""
    server = []
    async with httpx.AsyncClient(base_url=sched.url, timeout=120) as client:
        await login(client)
        for _ in range(loads + 1):
            answer = await client.get("/console/")
            found = TIMING.search(answer.headers.get("server-timing", ""))
            if answer.status_code != 200 or found is None:
                raise RuntimeError(f"overview: {answer.status_code} {answer.text[:200]}")
            server.append(float(found[1]))
    return server


async def bench(args: argparse.Namespace, sched: Scheduler) -> dict[str, list[float]]:
    r: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(sched.redis_url)
    try:
        t0 = time.perf_counter()
        await asyncio.to_thread(fill_registry, sched, args.devices, args.versions)
        await wait_registry(r, args.devices, timeout_s=1800)
        ingest_s = time.perf_counter() - t0
        print(f"registry: {args.devices} devices in {ingest_s:.1f} s", flush=True)
        pages = await page_loads(sched, args.loads)
        index = await census_ms(r, args.runs, scan=False)
        scan = await census_ms(r, args.runs, scan=True)
    finally:
        await r.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
    return {"ingest": [args.devices / ingest_s], "pages": pages, "index": index, "scan": scan}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=20, help="firmware versions")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loads", type=int, default=9)
    args = parser.parse_args()
    load = os.getloadavg()
    with running_scheduler(REDIS_DB, "overview-bench-") as sched:
        results = asyncio.run(bench(args, sched))
    n = f"({args.devices} devices, {args.versions} firmware versions)"
    print(f"\n{machine_line(load)}")
    print(f"console.registry_ingest_per_s = {results['ingest'][0]:.0f} devices/s")
    for name, key in (("overview_census_ms_1m", "index"), ("overview_census_scan_ms_1m", "scan")):
        runs = [round(x, 1) for x in results[key]]
        print(f"console.{name} = {statistics.median(results[key]):.1f} ms  {n} runs {runs}")
    first, later = results["pages"][0], results["pages"][1:]
    print(
        f"console.overview_page_ms_1m = {first:.1f} ms first load (census), "
        f"{statistics.median(later):.1f} ms median of {len(later)} later loads (server)"
    )


if __name__ == "__main__":
    main()
