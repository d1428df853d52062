"""A private redis-server on a free loopback port, for tests that may not use the shared one:
fault runs that kill it, security tests that need an ACL user or TLS.

The shared stack's Redis serves everyone on the machine and is never restarted or
reconfigured. A private server runs Debian's redis-server with a configuration of its own
(extra lines: ACL users, TLS, persistence) in its own directory. `start()` waits for the
server's "Ready to accept connections" line (its output is read to the end by a thread, so
a long run never fills the pipe); `kill()` is `kill -9`; `start()` again reuses the
directory, as a restarted server would (with `appendonly yes` it replays its AOF). Every
failure raises `PrivateRedisError`; `running_redis()`, for fixtures, turns it into
`tests.conftest.missing`.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from ops.demo_env import free_port
from tests.conftest import missing

HOST = "127.0.0.1"
READY = "Ready to accept connections"
START_TIMEOUT_S = 30.0
# Persistence as the local stack configures it: a kill loses at most the last second.
AOF_EVERYSEC = ("appendonly yes", "appendfsync everysec")


class PrivateRedisError(RuntimeError):
    """The private redis-server could not be started."""


def acl_lines(user: str, password: str) -> list[str]:
    """The default user off; `user` may do anything."""
    return ["user default off", f"user {user} on >{password} ~* &* +@all"]


def tls_lines(tls_dir: Path) -> list[str]:
    """TLS on the server's port (deploy/local/make_certs.py's certificate), no client certs."""
    return [
        f"tls-cert-file {tls_dir / 'server.pem'}",
        f"tls-key-file {tls_dir / 'server.key'}",
        f"tls-ca-cert-file {tls_dir / 'ca.pem'}",
        "tls-auth-clients no",
    ]


class PrivateRedis:
    def __init__(self, directory: Path, *, extra: Sequence[str] = (), tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise PrivateRedisError("redis-server is not installed (deploy/local/up installs it)")
        self.directory = directory
        self.port = free_port()
        self.tls = tls
        directory.mkdir(parents=True, exist_ok=True)
        port_lines = ["port 0", f"tls-port {self.port}"] if tls else [f"port {self.port}"]
        config = directory / "redis.conf"
        config.write_text(
            "\n".join([f"bind {HOST}", f"dir {directory}", 'save ""', *port_lines, *extra]) + "\n"
        )
        config.chmod(0o600)  # it may hold a password
        self._args = [binary, str(config)]
        self.process: subprocess.Popen[str] | None = None

    def url(self, db: int = 0) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}/{db}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Start the server; the monotonic time at which it said it was ready."""
        process = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.process = process
        ready = threading.Event()
        tail: deque[str] = deque(maxlen=20)

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                tail.append(line.rstrip())
                if READY in line:
                    ready.set()
            process.stdout.close()

        threading.Thread(target=drain, name=f"redis-{self.port}", daemon=True).start()
        if not ready.wait(timeout_s):
            self.stop()
            raise PrivateRedisError(
                f"the private redis-server did not start in {timeout_s} s:\n" + "\n".join(tail)
            )
        return time.monotonic()

    def kill(self) -> None:
        """`kill -9`: whatever the server had not written to disk is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class FlushedRedis:
    """A fault run's part whose "kill" empties a running server (FLUSHALL) and whose
    "start" is at once: the server answers throughout."""

    def __init__(self, node: PrivateRedis) -> None:
        self.node = node

    def kill(self) -> None:
        client = redis.Redis.from_url(self.node.url())
        try:
            client.flushall()
        finally:
            client.close()

    def start(self) -> float:
        return time.monotonic()

    def stop(self) -> None:
        self.node.stop()


@contextmanager
def running_redis(
    directory: Path, *, extra: Sequence[str] = (), tls: bool = False
) -> Iterator[PrivateRedis]:
    try:
        server = PrivateRedis(directory, extra=extra, tls=tls)
        server.start()
    except PrivateRedisError as exc:
        missing(str(exc))
    try:
        yield server
    finally:
        server.stop()
