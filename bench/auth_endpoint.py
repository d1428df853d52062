"""The broker's authentication call, `POST /v1/broker/authenticate`, under concurrent load.

A server process runs the scheduler's API exactly as `python -m scheduler` serves it
(Services, build_app, uvicorn with uvloop and httptools) but without its consumers and
reconciler, on Redis db 12, with --devices registered credentials. Client processes
(--clients, each running --concurrency httpx.AsyncClients, one connection and one request
in flight each) send valid IoTDA credentials of random devices for --seconds and count the
answers; with --wrk, wrk (C) sends the same load, so the client's own cost (httpx spends
several times the server's CPU per request) stops hiding the server's. The same load on
`GET /healthz` (one Redis PING, nothing else) is the peer: the ratio says what checking a
device costs above the bare request. Figures: requests/s (median of --runs after a
warm-up) and the server's CPU per request (from /proc; the client processes share the
machine, so requests/s is a floor on a busy 2-core box, CPU per request the capacity).

    .venv/bin/python bench/auth_endpoint.py [--devices 10000] [--clients 2]
        [--concurrency 32] [--seconds 5] [--runs 3] [--wrk]

Needs the local stack (deploy/local/up; set -a; . .state/env.sh; set +a). Removes the
credentials it registered, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.demo_env import free_port
from ota.clock import now_ms
from ota.device_auth import credentials_for

REDIS_DB = 12
BROKER_KEY = "bench-broker-key-0123"
PREFIX = "bench-auth-"


def secret_of(i: int) -> str:
    return f"bench-secret-{i:08d}"


def redis_url() -> str:
    base = os.environ.get("OTA_REDIS_URL", "redis://127.0.0.1:6379/0").rstrip("/")
    head, _, last = base.rpartition("/")
    return f"{head if last.isdigit() else base}/{REDIS_DB}"


# ------------------------------------------------------------------ the server process


async def serve(port: int, devices: int) -> None:
    import uvicorn

    from scheduler.api.app import build_app
    from scheduler.credentials import ImportEntry
    from scheduler.services import Services
    from scheduler.settings import SchedulerSettings

    settings = SchedulerSettings.from_env(
        {
            **os.environ,
            "OTA_REDIS_URL": redis_url(),
            "OTA_API_KEYS": f"{BROKER_KEY}:broker",
            "OTA_SCHEDULER_PORT": str(port),
        }
    )
    services = Services.build(settings)
    for start in range(0, devices, 1000):
        await services.credentials.import_batch(
            [
                ImportEntry(i, f"{PREFIX}{i}", secret_of(i))
                for i in range(start, min(devices, start + 1000))
            ]
        )
    config = uvicorn.Config(
        build_app(services),
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await services.close()


# ------------------------------------------------------------------ the load


async def load(
    url: str, path: str, devices: int, concurrency: int, seconds: float
) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {BROKER_KEY}"}
    now = now_ms()
    bodies = []
    for i in random.sample(range(devices), min(devices, 2000)):
        c = credentials_for(f"{PREFIX}{i}", secret_of(i), now)
        bodies.append({"clientid": c.client_id, "username": c.username, "password": c.password})
    # One client (one connection) per worker: httpx's shared pool, not the server, is the
    # bottleneck when many requests wait on one AsyncClient (240 requests/s measured here).
    # Clients are made and connected before the clock starts: making one costs tens of ms.
    clients = [httpx.AsyncClient(base_url=url, headers=headers) for _ in range(concurrency)]
    await asyncio.gather(*(c.get("/healthz") for c in clients))
    done = 0
    started = time.monotonic()
    deadline = started + seconds

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        nonlocal done
        i = k
        while time.monotonic() < deadline:
            i += 1
            if path == "/healthz":
                response = await client.get(path)
            else:
                response = await client.post(path, json=bodies[i % len(bodies)])
                if response.json()["result"] != "allow":
                    raise RuntimeError(f"denied: {response.text}")
            response.raise_for_status()
            done += 1

    try:
        await asyncio.gather(*(worker(k, c) for k, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return done, time.monotonic() - started


def client_process(
    args: tuple[str, str, int, int, float], out: multiprocessing.Queue[tuple[int, float]]
) -> None:
    out.put(asyncio.run(load(*args)))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, path: str, pid: int, opts: argparse.Namespace) -> tuple[float, float]:
    """(requests/s, server CPU ms per request) of one run."""
    queue: multiprocessing.Queue[tuple[int, float]] = multiprocessing.Queue()
    work = (url, path, opts.devices, opts.concurrency, opts.seconds)
    procs = [
        multiprocessing.Process(target=client_process, args=(work, queue))
        for _ in range(opts.clients)
    ]
    cpu0 = cpu_s(pid)
    for p in procs:
        p.start()
    results = [queue.get(timeout=opts.seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    # The clients' windows overlap (each starts its clock once connected): add their rates.
    total = sum(done for done, _ in results)
    rate = sum(done / elapsed for done, elapsed in results)
    return rate, 1000 * (cpu_s(pid) - cpu0) / max(total, 1)


WRK_SCRIPT = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/v1/broker/authenticate", nil, bodies[i])
end
"""


def measure_wrk(url: str, pid: int, opts: argparse.Namespace) -> tuple[float, float]:
    """The same load from wrk (C, one thread, --concurrency x --clients connections)."""
    now = now_ms()
    bodies = []
    for i in random.sample(range(opts.devices), min(opts.devices, 2000)):
        c = credentials_for(f"{PREFIX}{i}", secret_of(i), now)
        body = f'{{"clientid":"{c.client_id}","username":"{c.username}","password":"{c.password}"}}'
        bodies.append("[[" + body + "]]")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT % (",".join(bodies), BROKER_KEY))
        script.flush()
        connections = opts.clients * opts.concurrency
        cpu0 = cpu_s(pid)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{opts.seconds:g}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return total / opts.seconds, 1000 * (cpu_s(pid) - cpu0) / max(total, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight per client")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--wrk", action="store_true", help="also load the endpoint with wrk")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: the server
    opts = p.parse_args()
    if opts.serve:
        import uvloop

        uvloop.run(serve(opts.serve, opts.devices))
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--devices", str(opts.devices)],
        env={**os.environ, "OTA_LOG_LEVEL": "WARNING"},
    )
    r = redis.Redis.from_url(redis_url())
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not come up")
            time.sleep(0.2)
        print(
            f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load {os.getloadavg()[0]:.2f}; {opts.devices} devices, {opts.clients} clients x "
            f"{opts.concurrency} in flight, {opts.seconds:g} s per run, median of {opts.runs} "
            "after a warm-up"
        )
        loads: list[tuple[str, Callable[[], tuple[float, float]]]] = [
            ("auth (httpx)", lambda: measure(url, "/v1/broker/authenticate", server.pid, opts)),
            ("healthz (httpx)", lambda: measure(url, "/healthz", server.pid, opts)),
        ]
        if opts.wrk:
            loads.append(("auth (wrk)", lambda: measure_wrk(url, server.pid, opts)))
        for name, run in loads:
            run()  # warm-up
            runs = [run() for _ in range(opts.runs)]
            rates = [rate for rate, _ in runs]
            cpu = statistics.median(c for _, c in runs)
            print(
                f"{name}: {statistics.median(rates):,.0f} requests/s "
                f"(runs {', '.join(f'{x:,.0f}' for x in rates)}); "
                f"server CPU {cpu:.3f} ms per request"
            )
    finally:
        server.terminate()
        server.wait(30)
        keys = list(r.scan_iter(match=f"ota:sched:cred:{PREFIX}*", count=5000))
        for start in range(0, len(keys), 5000):
            r.delete(*keys[start : start + 5000])
        r.close()


if __name__ == "__main__":
    main()
