"""How long a scheduler takes to record a fleet's credentials on `ota.credentials` and to put
an emptied credential store back from it (scheduler/credential_log.py).

Starts a scheduler process (bench/scheduler_process.py) on a Redis db of its own (--redis-db,
flushed before and after; the credential store is there too), registers --devices credentials
straight into the store as the simulated fleets do (`import_pairs`: listed as pending, not
sent), and times:
- `credentials.record_s`: from the import's end until the scheduler's drain has sent every
  record (the pending set empty);
- `credentials.restore_s`: from deleting every record and the store's mark (the store
  emptied) until the store holds every record again, put back by the scheduler's restore.
Prints the figures, the scheduler's CPU for each phase and its peak resident memory.

Usage: .venv/bin/python bench/credential_restore.py [--devices 100000] [--redis-db 4]
Needs the local stack (deploy/local/up) and its env (`. .state/env.sh`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the repository's `scheduler` and `bench` packages

from bench.scheduler_process import cpu_s, machine_line, running_scheduler  # noqa: E402
from scheduler.credential_import import import_pairs  # noqa: E402
from scheduler.credential_log import MARK  # noqa: E402
from scheduler.credentials import PENDING, record_key  # noqa: E402
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys  # noqa: E402

SECRET = "bench-secret-0123"
POLL_S = 0.2  # how often the store is looked at (a process we do not control)
TIMEOUT_S = 1800.0


def wait(what: str, done: Callable[[], bool]) -> float:
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > TIMEOUT_S:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - start


def records(r: redis.Redis[bytes]) -> int:
    return sum(1 for _ in r.scan_iter(match=record_key("*"), count=10_000))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--redis-db", type=int, default=4)
    args = parser.parse_args()
    base = os.environ.get("OTA_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    store_url = f"{base}/{args.redis_db}"
    store = redis.Redis.from_url(store_url)
    store.flushdb()
    os.environ["OTA_CREDENTIALS_REDIS_URL"] = store_url
    load = os.getloadavg()
    try:
        with running_scheduler(redis_db=args.redis_db, prefix="credbench") as sched:
            assert sched.proc is not None
            pid = sched.proc.pid
            wait("the first restore's mark", lambda: bool(store.exists(MARK)))
            pairs = ((f"credbench-{n:08d}", SECRET) for n in range(args.devices))
            keys = CredentialKeys.parse(DEV_CREDENTIAL_KEYS)
            began = time.monotonic()
            asyncio.run(import_pairs(store_url, keys, pairs))
            imported_s = time.monotonic() - began
            cpu0 = cpu_s(pid)
            record_s = wait("every record sent", lambda: store.scard(PENDING) == 0)
            cpu1 = cpu_s(pid)
            held = records(store)
            doomed = list(store.scan_iter(match=record_key("*"), count=10_000))
            for start in range(0, len(doomed), 10_000):
                store.delete(*doomed[start : start + 10_000])
            store.delete(MARK)
            restore_s = wait(
                "the store put back", lambda: bool(store.exists(MARK)) and records(store) == held
            )
            cpu2 = cpu_s(pid)
            rss = peak_rss_mb(pid)
    finally:
        store.flushdb()
    print(machine_line(load))
    print(f"imported {args.devices} credentials into the store in {imported_s:.1f} s")
    print(f"credentials.record_s = {record_s:.1f} s  (scheduler CPU {cpu1 - cpu0:.1f} s)")
    print(f"credentials.restore_s = {restore_s:.1f} s  (scheduler CPU {cpu2 - cpu1:.1f} s)")
    print(f"scheduler peak resident memory {rss:.0f} MB; records held {held}")


if __name__ == "__main__":
    main()
