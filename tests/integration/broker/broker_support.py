"""Runs the device broker (deploy/broker's launcher jar) as a process of its own for tests.

The jars come from OTA_BROKER_LIB, else `<state>/broker/lib` (built by deploy/local/up; a
symlink to the current build, resolved at start so a rebuild never swaps jars under us).
Every port is a free one, the TLS files are made in a temporary folder by
deploy/local/make_certs.py, and the authentication URL is the caller's, so a test suite
runs its own broker beside the stack's.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = "io.otarollout.broker.Launcher"


def broker_lib() -> Path:
    explicit = os.environ.get("OTA_BROKER_LIB", "").strip()
    if explicit:
        return Path(explicit)
    state = os.environ.get("OTA_STATE_DIR", "").strip() or str(REPO / ".state")
    return Path(state) / "broker" / "lib"


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_certs(folder: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "deploy/local/make_certs.py"), "--dir", str(folder)],
        check=True,
        capture_output=True,
    )


@dataclass
class BrokerProcess:
    """A running broker: its ports, its CA, its platform account and its log lines."""

    process: subprocess.Popen[str]
    tls_port: int
    plain_port: int
    platform_port: int
    metrics_port: int
    ca_file: Path
    platform_user: str
    platform_password: str
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            if line.startswith("ota-broker: ready"):
                self._ready.set()
        self._ready.set()  # exited: let the waiter see it

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_log(self, text: str, timeout_s: float = 10.0) -> None:
        """Waits until a log line contains `text` (the log is written asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            assert time.monotonic() < deadline, f"no log line with {text!r} in {timeout_s}s"
            time.sleep(0.05)

    def tls_context(self) -> ssl.SSLContext:
        """What a device uses: verify the broker's certificate against the local CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name_and_labels: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name_and_labels + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def refusals(self, reason: str) -> float:
        return self.metric(f'ota_broker_connects_total{{result="deny",reason="{reason}"}}')

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_broker(
    lib: Path,
    state_dir: Path,
    auth_url: str = "",
    auth_key: str = "",
    heap: str = "512m",
    **settings: str,
) -> BrokerProcess:
    """Starts the launcher and waits for its ready line (at most 120 s). The authentication
    URL and key are http mode's; redis mode's settings come in `settings`, which may also
    name the ports and the platform account (free ones and a fresh one otherwise)."""
    tls_dir = state_dir / "tls"
    make_certs(tls_dir)
    tls_port, plain_port, platform_port, metrics_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_BROKER_")}
    env |= {
        "OTA_BROKER_STATE_DIR": str(state_dir / "broker"),
        "OTA_BROKER_TLS_PORT": str(tls_port),
        "OTA_BROKER_PORT": str(plain_port),
        "OTA_BROKER_PLATFORM_PORT": str(platform_port),
        "OTA_BROKER_METRICS_PORT": str(metrics_port),
        "OTA_BROKER_TLS_KEYSTORE": str(tls_dir / "server.p12"),
        "OTA_BROKER_TLS_KEYSTORE_PASSWORD": (tls_dir / "server.p12.pass").read_text(),
        "OTA_MQTT_PLATFORM_USER": "ota-platform-test",
        "OTA_MQTT_PLATFORM_PASSWORD": secrets.token_urlsafe(16),
        **settings,
    }
    if auth_url:
        env |= {"OTA_BROKER_AUTH_URL": auth_url, "OTA_BROKER_AUTH_KEY": auth_key}
    process = subprocess.Popen(
        ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-cp", f"{lib.resolve()}/*", LAUNCHER],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    broker = BrokerProcess(
        process,
        int(env["OTA_BROKER_TLS_PORT"]),
        int(env["OTA_BROKER_PORT"]),
        int(env["OTA_BROKER_PLATFORM_PORT"]),
        int(env["OTA_BROKER_METRICS_PORT"]),
        tls_dir / "ca.pem",
        env["OTA_MQTT_PLATFORM_USER"],
        env["OTA_MQTT_PLATFORM_PASSWORD"],
    )
    broker._reader = threading.Thread(target=broker._read_output, daemon=True)
    broker._reader.start()
    if not broker._ready.wait(120) or process.poll() is not None:
        broker.stop()
        raise RuntimeError(f"the broker did not start:\n{broker.log()[-4000:]}")
    return broker


def restart_same_ports(
    lib: Path,
    state_dir: Path,
    old: BrokerProcess,
    auth_url: str = "",
    auth_key: str = "",
    heap: str = "512m",
    **settings: str,
) -> BrokerProcess:
    """A new broker process on a stopped one's ports, with the same platform account."""
    return start_broker(
        lib,
        state_dir,
        auth_url,
        auth_key,
        heap,
        **settings,
        OTA_BROKER_TLS_PORT=str(old.tls_port),
        OTA_BROKER_PORT=str(old.plain_port),
        OTA_BROKER_PLATFORM_PORT=str(old.platform_port),
        OTA_BROKER_METRICS_PORT=str(old.metrics_port),
        OTA_MQTT_PLATFORM_USER=old.platform_user,
        OTA_MQTT_PLATFORM_PASSWORD=old.platform_password,
    )


class RestartableBroker:
    """A private broker the fault runs kill with SIGKILL (no offline is announced, as in a
    crash) and start again on the same ports and platform account (tests.faults.restart_run's
    Restartable). Each start has a state folder of its own: a crashed broker keeps nothing."""

    def __init__(
        self,
        lib: Path,
        state_dir: Path,
        auth_url: str = "",
        auth_key: str = "",
        heap: str = "512m",
        **settings: str,
    ) -> None:
        self.lib, self.state_dir, self.heap = lib, state_dir, heap
        self.auth_url, self.auth_key, self.settings = auth_url, auth_key, settings
        self.starts = 0
        self.process: BrokerProcess | None = None

    @property
    def current(self) -> BrokerProcess:
        assert self.process is not None, "the broker was never started"
        return self.process

    def start(self) -> float:
        state = self.state_dir / f"start-{self.starts}"
        self.starts += 1
        if self.process is None:
            self.process = start_broker(
                self.lib, state, self.auth_url, self.auth_key, self.heap, **self.settings
            )
        else:
            self.process = restart_same_ports(
                self.lib,
                state,
                self.process,
                self.auth_url,
                self.auth_key,
                self.heap,
                **self.settings,
            )
        return time.monotonic()

    def kill(self) -> None:
        os.killpg(self.current.process.pid, signal.SIGKILL)
        self.current.stop()  # reaps it and closes its output

    def stop(self) -> None:
        if self.process is not None and self.process.process.poll() is None:
            self.process.stop()
