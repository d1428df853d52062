"""The download edge beside nginx, under wrk, in one run.

Starts Debian's nginx (worker_processes = edge processes, sendfile on, tcp_nopush on) and
the edge (plain and TLS) on loopback, all serving one package, and drives each with wrk
and random aligned Range requests:
- 1 MiB ranges: bytes/s; 4 KiB ranges: requests/s; at each connection count; plain, TLS;
- CPU seconds per GB served, per server, from /proc/<pid>/stat of its process tree;
- resident memory of each server while 10,000 slow downloads are held open.
Each figure is the median of --repeats runs, servers alternating, after a warm-up.

    .venv/bin/python bench/edge_bench.py [--processes 1] [--duration 8] [--repeats 3]

Prints a table and the headline lines; writes the raw runs to bench/out/edge-<utc>.json.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

import trustme

from ops.demo_env import free_port
from ota.settings import CommonSettings
from ota.tokens import mint

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LUA = HERE / "edge" / "range.lua"
SLOW = HERE / "edge" / "slow_clients.py"
PACKAGE_MIB = 64
TICKS = os.sysconf("SC_CLK_TCK")
UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass
class Run:
    server: str
    mode: str  # plain | tls
    span: int
    connections: int
    rps: float
    bytes_s: float
    cpu_s_per_gb: float
    bad_status: int
    socket_errors: str


def wait_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree(pid: int) -> list[int]:
    """The pid and all its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += tree(int(child))
    return found


def cpu_s(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def rss_mb(pid: int) -> float:
    total_kb = 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except FileNotFoundError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total_kb += int(match.group(1)) if match else 0
    return total_kb / 1024


def _size(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([KMGT]?B)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * UNITS[match.group(2)]


@dataclass
class WrkResult:
    rps: float
    bytes: float
    bytes_s: float
    bad_status: int
    socket_errors: str


def wrk(
    url: str, path: str, size: int, span: int, token: str, conns: int, duration_s: int
) -> WrkResult:
    threads = 2 if conns >= 2 else 1
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{duration_s}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            "--",
            path,
            str(size),
            str(span),
            token,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration_s + 60,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    moved = re.search(r"requests in ([\d.]+)(m?s), ([\d.]+[KMGT]?B) read", out)
    if rate is None or moved is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    seconds = float(moved.group(1)) / (1000 if moved.group(2) == "ms" else 1)
    errors = re.search(r"Socket errors: (.*)", out)
    bad = re.search(r"bad_status (\d+)", out)
    moved_bytes = _size(moved.group(3))
    return WrkResult(
        rps=float(rate.group(1)),
        bytes=moved_bytes,
        bytes_s=moved_bytes / seconds,
        bad_status=int(bad.group(1)) if bad else -1,
        socket_errors=errors.group(1) if errors else "",
    )


@contextmanager
def running(
    cmd: list[str], env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        if port is not None:
            wait_port(port)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", default="64,1000")
    parser.add_argument("--spans", default="1048576,4096")
    parser.add_argument("--modes", default="plain,tls")
    parser.add_argument("--slow-modes", default="plain", help="plain,tls: where to hold them")
    parser.add_argument(
        "--slow", type=int, default=10_000, help="slow downloads for the RSS figure (0: skip)"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # the 64 MiB package and certs
    root.chmod(0o755)  # nginx's workers run unprivileged
    data = os.urandom(PACKAGE_MIB * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    (root / "cache" / "sha256").mkdir(parents=True)
    (root / "cache" / "sha256" / sha).write_bytes(data)
    for name in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
        (root / name).mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "edge.pem"))
    cert.private_key_pem.write_to_path(str(root / "edge.key"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    token = mint(
        CommonSettings.from_env({}).token_keys,
        device_id="bench-device",
        package_sha256=sha,
        expires_s=int(time.time()) + 86400,
    )
    path = f"/packages/sha256/{sha}"
    ports = {
        "nginx": free_port(),
        "nginx_tls": free_port(),
        "edge": free_port(),
        "edge_tls": free_port(),
    }
    conf = Template((HERE / "edge" / "nginx.conf.template").read_text()).substitute(
        workers=args.processes,
        root=root,
        port=ports["nginx"],
        tls_port=ports["nginx_tls"],
        cert=root / "cert.pem",
        key=root / "edge.key",
        pid=root / "nginx.pid",
    )
    (root / "nginx.conf").write_text(conf)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    edge_env = {
        **base_env,
        "OTA_EDGE_HOST": "127.0.0.1",
        "OTA_EDGE_CACHE_DIR": str(root / "cache"),
        "OTA_EDGE_PROCESSES": str(args.processes),
        "OTA_EDGE_EVENTS": "false",
        "OTA_EDGE_METRICS_PORT": "0",
        "OTA_LOG_LEVEL": "WARNING",
        "OTA_EDGE_IDLE_TIMEOUT_S": "300",
    }
    python = str(REPO / ".venv" / "bin" / "python")
    runs: list[Run] = []
    rss: dict[str, float] = {}
    with (
        running(
            ["nginx", "-p", str(root), "-c", str(root / "nginx.conf")], port=ports["nginx"]
        ) as nginx,
        running(
            [python, "-m", "download_edge"],
            {**edge_env, "OTA_EDGE_PORT": str(ports["edge"])},
            ports["edge"],
        ) as edge,
        running(
            [python, "-m", "download_edge"],
            {
                **edge_env,
                "OTA_EDGE_PORT": str(ports["edge_tls"]),
                "OTA_EDGE_TLS_CERT": str(root / "cert.pem"),
                "OTA_EDGE_TLS_KEY": str(root / "edge.key"),
            },
            ports["edge_tls"],
        ) as edge_tls,
    ):
        pids = {"nginx": nginx.pid, "edge": edge.pid}
        urls = {
            ("nginx", "plain"): f"http://127.0.0.1:{ports['nginx']}",
            ("nginx", "tls"): f"https://127.0.0.1:{ports['nginx_tls']}",
            ("edge", "plain"): f"http://127.0.0.1:{ports['edge']}",
            ("edge", "tls"): f"https://127.0.0.1:{ports['edge_tls']}",
        }
        edge_pid = {"plain": edge.pid, "tls": edge_tls.pid}
        for url in urls.values():  # warm-up: page cache, TLS sessions, JITless paths
            wrk(url, path, len(data), 1 << 20, token, 16, 2)
        for mode in args.modes.split(","):
            for span in (int(s) for s in args.spans.split(",")):
                for conns in (int(c) for c in args.connections.split(",")):
                    for repeat in range(args.repeats):
                        order = ("nginx", "edge") if repeat % 2 == 0 else ("edge", "nginx")
                        for server in order:
                            pid = edge_pid[mode] if server == "edge" else pids["nginx"]
                            before = cpu_s(pid)
                            result = wrk(
                                urls[(server, mode)],
                                path,
                                len(data),
                                span,
                                token,
                                conns,
                                args.duration,
                            )
                            used = cpu_s(pid) - before
                            run = Run(
                                server,
                                mode,
                                span,
                                conns,
                                result.rps,
                                result.bytes_s,
                                used / (result.bytes / 1e9),
                                result.bad_status,
                                result.socket_errors,
                            )
                            runs.append(run)
                            print(json.dumps(asdict(run)), flush=True)
        if args.slow:
            for slow_mode in args.slow_modes.split(","):
                tls = slow_mode == "tls"
                for server, port, pid in (
                    (
                        "edge",
                        ports["edge_tls" if tls else "edge"],
                        edge_tls.pid if tls else edge.pid,
                    ),
                    ("nginx", ports["nginx_tls" if tls else "nginx"], nginx.pid),
                ):
                    name = f"{server}_tls" if tls else server
                    idle = rss_mb(pid)
                    client = subprocess.Popen(
                        [python, str(SLOW), "127.0.0.1", str(port), path, token, str(args.slow)]
                        + (["tls"] if tls else []),
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    assert client.stdout is not None
                    line = client.stdout.readline().strip()
                    time.sleep(5)
                    rss[name] = rss_mb(pid)
                    rss[f"{name}_idle"] = idle
                    print(
                        f"{name}: {line}, RSS {rss[name]:.1f} MB (idle {idle:.1f} MB)", flush=True
                    )
                    client.terminate()
                    client.wait()
                    time.sleep(2)
    report(args, runs, rss)
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"edge-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "runs": [asdict(r) for r in runs], "rss_mb": rss}, indent=1)
    )


def report(args: argparse.Namespace, runs: list[Run], rss: dict[str, float]) -> None:
    def med(server: str, mode: str, span: int, conns: int, field: str) -> float:
        values = [
            getattr(r, field)
            for r in runs
            if (r.server, r.mode, r.span, r.connections) == (server, mode, span, conns)
        ]
        return statistics.median(values) if values else float("nan")

    print(
        f"\nprocesses={args.processes} duration={args.duration}s repeats={args.repeats} (medians)"
    )
    print("| mode | range | conns | nginx | edge | edge/nginx | CPU s/GB nginx | CPU s/GB edge |")
    print("|---|---|---|---|---|---|---|---|")
    headline: dict[str, list[float]] = {}
    for mode in args.modes.split(","):
        for span in (int(s) for s in args.spans.split(",")):
            for conns in (int(c) for c in args.connections.split(",")):
                field = "bytes_s" if span >= 1 << 20 else "rps"
                n, e = med("nginx", mode, span, conns, field), med("edge", mode, span, conns, field)
                unit = "GB/s" if field == "bytes_s" else "req/s"
                scale = 1e9 if field == "bytes_s" else 1
                print(
                    f"| {mode} | {span // 1024} KiB | {conns} | {n / scale:.2f} {unit} | {e / scale:.2f} {unit} | "
                    f"{e / n:.2f} | {med('nginx', mode, span, conns, 'cpu_s_per_gb'):.2f} | "
                    f"{med('edge', mode, span, conns, 'cpu_s_per_gb'):.2f} |"
                )
                key = f"{'1mib_bytes' if field == 'bytes_s' else '4kib_rps'}{'_tls' if mode == 'tls' else ''}"
                headline.setdefault(key, []).append(e / n)
    print()
    for key, ratios in headline.items():
        print(
            f"edge.nginx_ratio_{key} = {min(ratios):.2f} x  (lowest over connection counts: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    if "edge_tls" in rss:
        print(
            f"edge.rss_10k_slow_tls_mb = {rss['edge_tls']:.0f} MB  (nginx {rss.get('nginx_tls', float('nan')):.0f} MB)"
        )
    if "edge" in rss:
        print(
            f"edge.rss_10k_slow_mb = {rss['edge']:.0f} MB  (nginx {rss.get('nginx', float('nan')):.0f} MB)"
        )


if __name__ == "__main__":
    main()
