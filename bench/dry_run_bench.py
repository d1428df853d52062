"""A dry run over a 1,000,000-device target list: how long the dry run takes to answer,
and how long one page of each of its device lists takes to read.

- scheduler.dry_run_page_ms_1m: GET /v1/dry-runs/{id}/devices?category=C&cursor=N&limit=100,
  for C in targeted, skipped and conflict at --pages cursors spread over each list
  (start, middle and end included), sequential requests on one keep-alive client; the
  median, with p99 beside it;
- scheduler.dry_run_create_s_1m: POST /v1/tasks?dry_run=true over the uploaded list, until
  the answer (list read, targets resolved and deduplicated, every device judged against
  the registry, the three lists written to Redis).

The registry is seeded straight into the scheduler's Redis (device hashes as the inbox
consumer writes them; a million version reports through Kafka would only slow the set-up):
every 10th device is on the target version, every 10th (offset 1) on a source version the
package does not allow, every 20th (offset 2) busy in another task, every 10th (offset 3)
never reported. The scheduler runs as its own process on fresh topics and Redis db 11
(taken in turns with the scheduler's tests through their lock file).

    .venv/bin/python bench/dry_run_bench.py [--devices 1000000] [--runs 3] [--pages 30]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis
from scheduler_process import KEY, Scheduler, machine_line, running_scheduler

from ops.rollout_api import upload_package, upload_targets
from scheduler import keys

REDIS_DB = 11
LOCK = Path(tempfile.gettempdir()) / f"ota-scheduler-tests-db{REDIS_DB}.lock"
SEED_CHUNK = 10_000


def seed(redis_url: str, ids: list[str]) -> None:
    r = redis.Redis.from_url(redis_url)
    for start in range(0, len(ids), SEED_CHUNK):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(start + SEED_CHUNK, len(ids))):
            key = keys.device(ids[i])
            if i % 10 == 3:
                continue  # never reported
            fw = "2.0" if i % 10 == 0 else ("0.9" if i % 10 == 1 else "1.0")
            fields: dict[str | bytes, bytes | float | int | str] = {"fw": fw, "seen_ms": 1}
            if i % 20 == 2:
                fields.update(task="other-task", state="DOWNLOADING")
            pipe.hset(key, mapping=fields)
        pipe.execute()
    r.close()


async def bench(args: argparse.Namespace, sched: Scheduler) -> dict[str, list[float]]:
    ids = [f"dry-{i:07d}" for i in range(args.devices)]
    t0 = time.perf_counter()
    await asyncio.to_thread(seed, sched.redis_url, ids)
    print(f"seeded {len(ids)} devices in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict[str, list[float]] = {"create": [], "page": []}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=sched.url, headers=headers, timeout=600) as api:
        package_id = await upload_package(
            api, os.urandom(64 * 1024), "bench.bin", allowed_sources="1.0,1.1"
        )
        list_id = await upload_targets(api, ids)
        body = {"type": "firmware", "package_id": package_id, "targets": {"list_id": list_id}}
        for run in range(args.runs + 1):
            t0 = time.perf_counter()
            answer = await api.post("/v1/tasks", params={"dry_run": "true"}, json=body)
            created = time.perf_counter() - t0
            assert answer.status_code == 200, answer.text
            dry = answer.json()
            print(f"run {run}: dry run {created:.2f} s, lists {dry['lists']}", flush=True)
            if run == 0:
                continue  # warm-up
            results["create"].append(created)
            for category, size in dry["lists"].items():
                cursors = [0, size // 2, max(size - 100, 0)]
                cursors += [size * k // args.pages for k in range(1, args.pages)]
                for cursor in cursors:
                    t1 = time.perf_counter()
                    page = await api.get(
                        f"/v1/dry-runs/{dry['dry_run_id']}/devices",
                        params={"category": category, "cursor": cursor, "limit": 100},
                    )
                    results["page"].append((time.perf_counter() - t1) * 1000)
                    assert page.status_code == 200, page.text
                    assert len(page.json()["items"]) == min(100, size - cursor)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pages", type=int, default=30)
    args = parser.parse_args()
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with running_scheduler(REDIS_DB, "bench-dry-") as sched:
            load = os.getloadavg()
            results = asyncio.run(bench(args, sched))
    pages = sorted(results["page"])
    print(f"\n{machine_line(load)}")
    print(f"dry runs: {[round(x, 2) for x in results['create']]} s; {len(pages)} pages")
    p99 = pages[min(len(pages) - 1, int(len(pages) * 0.99))]
    print(f"scheduler.dry_run_page_ms_1m = {statistics.median(pages):.2f} ms (p99 {p99:.2f} ms)")
    print(f"scheduler.dry_run_create_s_1m = {statistics.median(results['create']):.2f} s")


if __name__ == "__main__":
    main()
