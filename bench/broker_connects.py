"""Authenticated device connects per second on the device broker (deploy/broker), TLS and
plain, and the broker's resident memory with N devices connected, per authentication mode.

Starts its own broker (the launcher jar built by deploy/local/up, on free ports) per mode:
- `http`: the authentication URL points at a fast control-plane stand-in running in a second
  process of this script: an asyncio HTTP/1.1 keep-alive server that checks IoTDA's HMAC
  password, as the scheduler's endpoint does, without its Redis look-up. So a figure is the
  broker's cost plus one local HTTP round trip per connect, not the scheduler's (which costs
  more Python CPU: ~0.22 ms per connect measured).
- `redis`: the broker reads the credential store itself: the stack's Redis (OTA_REDIS_URL's
  server, database --redis-db, which nothing else uses; its `bench-*` records are deleted
  afterwards), the devices registered by the scheduler's own `Credentials.import_batch`.
The "helper" CPU is the stand-in's (http) or the Redis server's (redis, when it runs here).

First one warm-up round per mode (plain and TLS, --warmup connections each: the JIT needs
many thousand connects), then per mode --runs rounds of opening --connections MQTT 3.1.1
connections (--concurrency CONNECTs in flight, one asyncio client process, clean session,
user name and HMAC password as IoTDA devices send), waiting for every CONNACK (refusals are
counted and reported: 3 is the 2 s authentication timeout), reading the broker's RSS and its
live heap after a full GC (jcmd) with all of them held, then dropping them and waiting until
the broker counts no device. Prints each round, CPU per connect of the broker, the stand-in
and the client, and the medians.

Usage: .venv/bin/python bench/broker_connects.py [--connections 5000] [--concurrency 200]
       [--runs 3] [--warmup 10000] [--modes plain,tls] [--auth http,redis] [--redis-db 3]
       [--java java] [--lib .state/broker/lib]
Needs: java, the broker build (deploy/local/up), `ulimit -n` above --connections + 100.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import multiprocessing
import os
import re
import resource
import secrets
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis
import redis.asyncio

from scheduler.credentials import Credentials, ImportEntry
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys, SecretBox

REPO = Path(__file__).resolve().parents[1]
AUTH_KEY = "bench-broker-key"
BENCH_RECORDS = "ota:sched:cred:bench-*"  # the bench's devices, deleted after the run
CLIENT_ID = re.compile(rb"^(.+)_0_[01]_(\d{10})$")


# --- the control-plane stand-in (second process) ----------------------------------------


def secret_of(device_id: str) -> str:
    return f"secret-{device_id}"


def password_of(device_id: str, hour: str) -> str:
    return hmac.new(hour.encode(), secret_of(device_id).encode(), hashlib.sha256).hexdigest()


def _decide(body: bytes) -> bytes:
    request = orjson.loads(body)
    match = CLIENT_ID.match(str(request.get("clientid", "")).encode())
    if match is None:
        return orjson.dumps({"result": "deny", "reason": "malformed_client_id"})
    device_id, hour = match[1].decode(), match[2].decode()
    if request.get("username") != device_id:
        return orjson.dumps({"result": "deny", "reason": "username_mismatch"})
    if not hmac.compare_digest(password_of(device_id, hour), str(request.get("password", ""))):
        return orjson.dumps({"result": "deny", "reason": "bad_password"})
    return orjson.dumps(
        {"result": "allow", "is_superuser": False, "reason": "ok", "device_id": device_id}
    )


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])  # type: ignore[index]
            body = await reader.readexactly(length)
            authorized = f"authorization: bearer {AUTH_KEY}".encode() in head.lower()
            status, reply = (b"200 OK", _decide(body)) if authorized else (b"401 No", b"{}")
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(reply)).encode() + b"\r\n\r\n" + reply
            )
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve_auth(port: int) -> None:
    """The second process's main: serves until killed."""

    async def main() -> None:
        server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the broker ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    tls_port: int
    plain_port: int
    metrics_port: int
    ca_file: Path
    jcmd: str | None  # the one of the broker's JDK: another JDK's cannot attach

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]
        return kib / 1024

    def live_heap_mib(self) -> float:
        """Java heap in use right after a full GC (jcmd): what the connections really hold,
        unlike RSS, which grows with the heap G1 chose to keep."""
        jcmd = self.jcmd
        if jcmd is None:
            return float("nan")
        pid = str(self.process.pid)
        subprocess.run([jcmd, pid, "GC.run"], check=True, capture_output=True)
        info = subprocess.run([jcmd, pid, "GC.heap_info"], check=True, capture_output=True)
        used = re.search(rb"garbage-first heap\s+total[^\n]*?used (\d+)K", info.stdout)  # 17 and 25
        return int(used[1]) / 1024 if used else float("nan")

    def devices_connected(self) -> int:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        found = re.search(r'ota_broker_connected_clients\{kind="device"\} (-?\d+)', text)
        return int(found[1]) if found else 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def helper_cpu_s(pid: int) -> float:
    """0 when the helper is not a process of this machine (a remote Redis)."""
    return cpu_s(pid) if pid and Path(f"/proc/{pid}").exists() else 0.0


@dataclass
class Round:
    rate: float  # connects per second
    rss_mib: float  # broker RSS with every device connected
    heap_mib: float  # live Java heap with every device connected (after a full GC)
    broker_cpu_ms: float  # broker CPU per connect
    auth_cpu_ms: float  # helper CPU per connect: the http stand-in's, or Redis's
    client_cpu_ms: float  # this process's CPU per connect
    refused: dict[int, int]  # CONNACK code -> count (3 = auth_unavailable: the 2 s timeout)


DEFAULT_JVM_OPTIONS = ("-Xms128m", "-Xmx768m", "-XX:+UseG1GC")


def start_broker(
    lib: Path,
    folder: Path,
    java: str,
    auth: dict[str, str],
    jvm_options: tuple[str, ...] = DEFAULT_JVM_OPTIONS,
    prepare_tls: Callable[[Path], None] | None = None,
) -> Broker:
    """`prepare_tls` may replace the keystore make_certs.py wrote (another key type)."""
    tls = folder / "tls"
    subprocess.run(
        [sys.executable, str(REPO / "deploy/local/make_certs.py"), "--dir", str(tls)],
        check=True,
        capture_output=True,
    )
    if prepare_tls is not None:
        prepare_tls(tls)
    tls_port, plain_port, platform_port, metrics_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_BROKER_")}
    env |= {
        "OTA_BROKER_STATE_DIR": str(folder / "broker"),
        "OTA_BROKER_TLS_PORT": str(tls_port),
        "OTA_BROKER_PORT": str(plain_port),
        "OTA_BROKER_PLATFORM_PORT": str(platform_port),
        "OTA_BROKER_METRICS_PORT": str(metrics_port),
        "OTA_BROKER_TLS_KEYSTORE": str(tls / "server.p12"),
        "OTA_BROKER_TLS_KEYSTORE_PASSWORD": (tls / "server.p12.pass").read_text(),
        **auth,
        "OTA_MQTT_PLATFORM_USER": "ota-platform-bench",
        "OTA_MQTT_PLATFORM_PASSWORD": secrets.token_urlsafe(16),
    }
    log = (folder / "broker.log").open("wb")
    process = subprocess.Popen(
        [
            java,
            *jvm_options,
            "-cp",
            f"{lib.resolve()}/*",
            "io.otarollout.broker.Launcher",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 120
    while b"ota-broker: ready" not in (folder / "broker.log").read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"the broker did not start; log: {folder / 'broker.log'}")
        time.sleep(0.1)
    beside = Path(shutil.which(java) or java).resolve().parent / "jcmd"
    jcmd = str(beside) if beside.is_file() else shutil.which("jcmd")
    return Broker(process, tls_port, plain_port, metrics_port, tls / "ca.pem", jcmd)


# --- the devices --------------------------------------------------------------------------


def connect_packet(client_id: str, user: str, password: str) -> bytes:
    def field(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    body = field("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 300)
    body += field(client_id) + field(user) + field(password)
    assert len(body) < 16384
    length = (
        bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) if len(body) > 127 else bytes([len(body)])
    )
    return b"\x10" + length + body


async def open_device(
    port: int, tls: ssl.SSLContext | None, device_id: str, hour: str
) -> tuple[int, asyncio.StreamWriter]:
    """(CONNACK return code, the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(connect_packet(f"{device_id}_0_0_{hour}", device_id, password_of(device_id, hour)))
    connack = await reader.readexactly(4)
    if connack[0] != 0x20:
        raise RuntimeError(f"{device_id}: not a CONNACK: {connack.hex()}")
    return connack[3], writer


async def one_round(
    broker: Broker,
    auth_pid: int,
    tls: ssl.SSLContext | None,
    count: int,
    concurrency: int,
    tag: str,
) -> Round:
    """Connects `count` devices, holds them, drops them."""
    port = broker.tls_port if tls else broker.plain_port
    hour = datetime.now(UTC).strftime("%Y%m%d%H")
    gate = asyncio.Semaphore(concurrency)
    writers: list[asyncio.StreamWriter] = []

    refused: dict[int, int] = {}

    async def device(i: int) -> None:
        async with gate:
            code, writer = await open_device(port, tls, f"bench-{tag}-{i}", hour)
            writers.append(writer)
            if code:
                refused[code] = refused.get(code, 0) + 1

    cpu_before = (cpu_s(broker.process.pid), helper_cpu_s(auth_pid), time.process_time())
    started = time.perf_counter()
    try:
        async with asyncio.timeout(600):
            await asyncio.gather(*(device(i) for i in range(count)))
        elapsed = time.perf_counter() - started
        cpu_after = (cpu_s(broker.process.pid), helper_cpu_s(auth_pid), time.process_time())
        rss = broker.rss_mib()
        heap = broker.live_heap_mib()
    finally:
        for writer in writers:
            writer.transport.abort()
    deadline = time.monotonic() + 60
    while broker.devices_connected() > 0:  # the broker has let go of every connection
        if time.monotonic() > deadline:
            raise RuntimeError("the broker still counts devices 60 s after they left")
        await asyncio.sleep(0.2)
    broker_ms, auth_ms, client_ms = (
        (after - before) * 1000 / count for before, after in zip(cpu_before, cpu_after, strict=True)
    )
    accepted = count - sum(refused.values())
    return Round(accepted / elapsed, rss, heap, broker_ms, auth_ms, client_ms, refused)


async def register_devices(url: str, device_ids: list[str]) -> None:
    """The bench's devices in the credential store, as the scheduler registers them."""
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(url)
    credentials = Credentials(client, SecretBox(CredentialKeys.parse(DEV_CREDENTIAL_KEYS)), [])
    for start in range(0, len(device_ids), 2000):
        batch = device_ids[start : start + 2000]
        await credentials.import_batch(
            [ImportEntry(i, d, secret_of(d)) for i, d in enumerate(batch)]
        )
    await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


def delete_devices(url: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=BENCH_RECORDS, count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])
    client.close()


def redis_pid(url: str) -> int:
    client = redis.Redis.from_url(url)
    pid = int(client.info("server")["process_id"])
    client.close()
    return pid


def run_auth_mode(args: argparse.Namespace, auth_mode: str, redis_url: str) -> None:
    """Starts a broker for one authentication mode and runs every round on it."""
    modes = args.modes.split(",")
    tags = [f"{mode}-w" for mode in modes] + [f"{m}{r}" for m in modes for r in range(args.runs)]
    helper = None
    if auth_mode == "http":
        (auth_port,) = free_ports(1)
        helper = multiprocessing.get_context("spawn").Process(target=serve_auth, args=(auth_port,))
        helper.start()
        assert helper.pid is not None
        helper_pid = helper.pid
        auth = {
            "OTA_BROKER_AUTH_URL": f"http://127.0.0.1:{auth_port}/v1/broker/authenticate",
            "OTA_BROKER_AUTH_KEY": AUTH_KEY,
        }
    else:
        counts = {tag: args.warmup if tag.endswith("-w") else args.connections for tag in tags}
        ids = [f"bench-{tag}-{i}" for tag, n in counts.items() for i in range(n)]
        started = time.perf_counter()
        asyncio.run(register_devices(redis_url, ids))
        print(f"registered {len(ids)} devices in {time.perf_counter() - started:.1f} s", flush=True)
        helper_pid = redis_pid(redis_url)
        auth = {
            "OTA_BROKER_AUTH_MODE": "redis",
            "OTA_BROKER_REDIS_URL": redis_url,
            "OTA_CREDENTIAL_KEYS": DEV_CREDENTIAL_KEYS,
        }
    with tempfile.TemporaryDirectory(prefix="broker-bench-") as folder:
        broker = start_broker(args.lib, Path(folder), args.java, auth)
        try:
            measure(args, auth_mode, broker, helper_pid, modes)
        finally:
            broker.process.terminate()
            broker.process.wait(30)
            if helper is not None:
                helper.terminate()
                helper.join(10)
            if auth_mode == "redis":
                delete_devices(redis_url)


def measure(
    args: argparse.Namespace, auth_mode: str, broker: Broker, helper_pid: int, modes: list[str]
) -> None:
    idle = broker.rss_mib()
    print(f"[{auth_mode}] broker idle after start: RSS {idle:.0f} MiB", flush=True)
    tls = ssl.create_default_context(cafile=str(broker.ca_file))
    contexts = {"plain": None, "tls": tls}
    # Every path warm before any round: the JIT needs many thousand connects (plain
    # measured first after 3,000 ran at half the rate it reached later).
    for mode in modes:
        warm = asyncio.run(
            one_round(
                broker, helper_pid, contexts[mode], args.warmup, args.concurrency, f"{mode}-w"
            )
        )
        print(f"[{auth_mode}] {mode} warm-up: {warm.rate:.0f} connects/s", flush=True)
    idle_heap = broker.live_heap_mib()  # after the warm-ups' devices have left
    print(f"[{auth_mode}] live heap after the warm-ups: {idle_heap:.0f} MiB", flush=True)
    helper = "auth" if auth_mode == "http" else "redis"
    for mode in modes:
        context = contexts[mode]
        rounds = []
        for run in range(args.runs):
            tag = f"{mode}{run}"
            r = asyncio.run(
                one_round(broker, helper_pid, context, args.connections, args.concurrency, tag)
            )
            rounds.append(r)
            print(
                f"[{auth_mode}] {mode} run {run + 1}: {r.rate:.0f} connects/s, broker RSS "
                f"{r.rss_mib:.0f} MiB, live heap {r.heap_mib:.0f} MiB (idle {idle_heap:.0f})"
                f" with {args.connections} connected; CPU ms per "
                f"connect: broker {r.broker_cpu_ms:.3f}, {helper} {r.auth_cpu_ms:.3f}, "
                f"client {r.client_cpu_ms:.2f}" + (f"; REFUSED {r.refused}" if r.refused else ""),
                flush=True,
            )
        print(
            f"broker.connects.{auth_mode}.{mode} = "
            f"{statistics.median(r.rate for r in rounds):.0f} connects/s (median of "
            f"{args.runs}); broker CPU {statistics.median(r.broker_cpu_ms for r in rounds):.3f}"
            f" ms per connect, {helper} "
            f"{statistics.median(r.auth_cpu_ms for r in rounds):.3f} ms; "
            f"RSS with {args.connections} connected "
            f"{statistics.median(r.rss_mib for r in rounds):.0f} MiB (idle {idle:.0f} MiB), "
            f"live heap {statistics.median(r.heap_mib for r in rounds):.0f} MiB "
            f"(idle {idle_heap:.0f} MiB); load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10_000, help="connections per warm-up round")
    parser.add_argument("--modes", default="plain,tls", help="plain, tls or both (plain,tls)")
    parser.add_argument("--auth", default="http,redis", help="http, redis or both (http,redis)")
    parser.add_argument("--redis-db", type=int, default=3, help="redis mode's store database")
    parser.add_argument("--java", default="java", help="the java binary (another JDK)")
    state = os.environ.get("OTA_STATE_DIR") or str(REPO / ".state")
    parser.add_argument("--lib", type=Path, default=Path(state) / "broker" / "lib")
    args = parser.parse_args()
    if not (args.lib / "ota-broker.jar").is_file():
        sys.exit(f"no broker build in {args.lib}; run deploy/local/up first")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 1000)), hard)
    )
    stack = urlsplit(os.environ.get("OTA_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0")
    redis_url = urlunsplit((stack.scheme, stack.netloc, f"/{args.redis_db}", "", ""))
    version = subprocess.run([args.java, "-version"], capture_output=True, text=True).stderr
    print(f"java: {version.splitlines()[0]}", flush=True)
    for auth_mode in args.auth.split(","):
        run_auth_mode(args, auth_mode, redis_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
