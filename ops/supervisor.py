"""Run the platform's services as separate processes: `ota up` (or `python -m ops.supervisor`).

Each service is one `python -m <package>` process with its output in
<state dir>/logs/<service>.log. A service that exits unexpectedly is restarted with
jittered exponential backoff (the shared `ota.backoff` policy, capped), and one that
keeps crashing within seconds of starting
is given up on with an error. SIGTERM/SIGINT stop every service (SIGTERM, a grace
period, then SIGKILL); a second signal kills at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ota.backoff import Backoff

SERVICES = ("workers", "gateway", "download_edge", "scheduler")
# The retry number is the count of quick crashes in a row (0 after a stable run); the
# supervisor's loop schedules the restart itself, so it takes only the policy's delay.
RESTART_BACKOFF = Backoff(0.5, 10.0)
STABLE_AFTER_S = 30.0  # a run this long resets the backoff
MAX_QUICK_CRASHES = 5
STOP_GRACE_S = 15.0


@dataclass
class Service:
    """One supervised process and its restart bookkeeping (monotonic times)."""

    name: str
    command: Sequence[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_crashes: int = 0
    restart_at: float | None = None
    log: IO[bytes] | None = field(default=None, repr=False)
    env: Mapping[str, str] = field(default_factory=dict)  # this replica's own variables

    def start(self, env: Mapping[str, str]) -> None:
        if self.log is None:
            self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            list(self.command),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**env, **self.env},
            start_new_session=True,
        )
        self.started_at, self.restart_at = time.monotonic(), None
        print(
            f"[ota up] {self.name} started (pid {self.process.pid}, log {self.log_path})",
            flush=True,
        )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def schedule_restart(self, code: int) -> bool:
        """Plan a restart after a crash; False when it crashes too often to keep trying."""
        ran_for = time.monotonic() - self.started_at
        self.quick_crashes = 0 if ran_for >= STABLE_AFTER_S else self.quick_crashes + 1
        if self.quick_crashes >= MAX_QUICK_CRASHES:
            return False
        delay = RESTART_BACKOFF.delay_s(self.quick_crashes)
        self.restart_at = time.monotonic() + delay
        print(
            f"[ota up] {self.name} exited with {code} after {ran_for:.1f}s;"
            f" restarting in {delay:.2f}s",
            flush=True,
        )
        return True

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)


class Supervisor:
    def __init__(self, services: list[Service], env: Mapping[str, str]) -> None:
        self.services, self.env = services, env
        self.stopping = False
        self.failed: list[str] = []

    def request_stop(self, signum: int, _frame: object) -> None:
        if self.stopping:  # the second signal: no more patience
            for service in self.services:
                service.signal(signal.SIGKILL)
            raise SystemExit(130)
        print(f"[ota up] {signal.Signals(signum).name}: stopping services", flush=True)
        self.stopping = True

    def run(self, until: float | None = None) -> int:
        for service in self.services:
            service.start(self.env)
        while not self.stopping and not self.failed and (until is None or time.monotonic() < until):
            self._tend()
            time.sleep(0.2)
        self.stop()
        if self.failed:
            print(f"[ota up] gave up on {', '.join(self.failed)}: see their logs", file=sys.stderr)
            return 1
        return 0

    def _tend(self) -> None:
        now = time.monotonic()
        for service in self.services:
            if service.restart_at is not None:
                if now >= service.restart_at:
                    service.start(self.env)
                continue
            code = service.exited()
            if code is not None and not service.schedule_restart(code):
                self.failed.append(service.name)

    def stop(self) -> None:
        for service in self.services:
            service.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for service in self.services:
            if service.process is None:
                continue
            try:
                service.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"[ota up] {service.name} ignored SIGTERM; killing it", flush=True)
                service.signal(signal.SIGKILL)
                service.process.wait()
            if service.log is not None:
                service.log.close()
                service.log = None


# Per-replica metrics port variables; replica i listens on the configured port + i.
METRICS_PORT_VARS = {"workers": "WORKER_METRICS_PORT", "gateway": "GATEWAY_METRICS_PORT"}
DEFAULT_METRICS_PORTS = {"workers": 0, "gateway": 9102}


def replica_env(
    name: str, index: int, replicas: int, env: Mapping[str, str], supervisor_id: str = ""
) -> dict[str, str]:
    """What replica `index` of `replicas` needs to differ in: gateway slot and client id,
    metrics ports, a worker's static group membership id (stable across the restarts this
    supervisor makes, so a killed worker takes its partitions straight back; unique per
    supervisor, so two never fence each other). Workers share their consumer group; the
    edge scales with its own OTA_EDGE_PROCESSES (one port, SO_REUSEPORT)."""
    out: dict[str, str] = {}
    if name == "workers":
        base = env.get("OTA_WORKER_INSTANCE_ID") or f"{supervisor_id}-workers"
        out["OTA_WORKER_INSTANCE_ID"] = f"{base}-{index}" if replicas > 1 else base
    if replicas == 1:
        return out
    var = METRICS_PORT_VARS.get(name)
    if var is not None:
        port = int(env.get(f"OTA_{var}") or DEFAULT_METRICS_PORTS[name])
        if port:
            out[f"OTA_{var}"] = str(port + index)
    if name == "gateway":
        client = env.get("OTA_GATEWAY_CLIENT_ID") or "ota-gateway"
        out |= {
            "OTA_GATEWAY_REPLICAS": str(replicas),
            "OTA_GATEWAY_INDEX": str(index),
            "OTA_GATEWAY_CLIENT_ID": f"{client}-r{index}",
        }
    return out


def build_services(
    names: Sequence[str],
    log_dir: Path,
    replicas: int | Mapping[str, int] = 1,
    env: Mapping[str, str] | None = None,
) -> list[Service]:
    log_dir.mkdir(parents=True, exist_ok=True)
    supervisor_id = f"{socket.gethostname()}-{os.getpid()}"
    services = []
    for name in names:
        count = replicas if isinstance(replicas, int) else replicas.get(name, 1)
        for index in range(count):
            label = name if count == 1 else f"{name}-{index}"
            services.append(
                Service(
                    label,
                    (sys.executable, "-m", name),
                    log_dir / f"{label}.log",
                    env=replica_env(name, index, count, env or {}, supervisor_id),
                )
            )
    return services


def parse_scale(spec: str) -> dict[str, int]:
    """`workers=2,gateway=2` -> {"workers": 2, "gateway": 2}."""
    scale: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, count = item.partition("=")
        if not sep or name not in SERVICES or not count.isdigit() or not 1 <= int(count) <= 64:
            raise ValueError(f"--scale entry {item!r} is not <service>=<1..64>")
        scale[name] = int(count)
    return scale


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ota up", description="Run the OTA services as supervised processes."
    )
    parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"services to run, of {', '.join(SERVICES)} (default: all)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where service logs go (default: $OTA_STATE_DIR/logs or .state/logs)",
    )
    parser.add_argument("--for-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument(
        "--scale",
        default="",
        help="replicas per service, e.g. workers=2,gateway=2 (the edge: OTA_EDGE_PROCESSES)",
    )
    args = parser.parse_args(argv)
    try:
        args.scale = parse_scale(args.scale)
    except ValueError as exc:
        parser.error(str(exc))
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state_dir = Path(os.environ.get("OTA_STATE_DIR", ".state"))
    log_dir = args.log_dir or state_dir / "logs"
    services = build_services(args.services or SERVICES, log_dir, args.scale, os.environ)
    supervisor = Supervisor(services, os.environ)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    until = None if args.for_seconds is None else time.monotonic() + args.for_seconds
    return supervisor.run(until)


if __name__ == "__main__":
    sys.exit(main())
