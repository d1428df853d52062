"""A private redis-server on a free loopback port, with an ACL user and optionally TLS.

The shared stack's Redis is never restarted or reconfigured: security tests start their
own server from Debian's redis-server, wait for its "Ready to accept connections" line,
and stop it (by its own process) afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.demo_env import free_port
from tests.conftest import missing

READY = "Ready to accept connections"
START_LINES = 200  # a server says it is ready well within its first lines of log


@dataclass(frozen=True)
class PrivateRedis:
    port: int
    user: str
    password: str
    tls: bool

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"


@contextmanager
def private_redis(
    workdir: Path, user: str, password: str, tls_dir: Path | None = None
) -> Iterator[PrivateRedis]:
    """A redis-server where the default user is off and `user` may do anything."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (deploy/local/up installs it)")
    port = free_port()
    lines = [
        "bind 127.0.0.1",
        f"dir {workdir}",
        'save ""',
        "appendonly no",
        "user default off",
        f"user {user} on >{password} ~* &* +@all",
    ]
    if tls_dir is None:
        lines.append(f"port {port}")
    else:
        lines += [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {tls_dir / 'server.pem'}",
            f"tls-key-file {tls_dir / 'server.key'}",
            f"tls-ca-cert-file {tls_dir / 'ca.pem'}",
            "tls-auth-clients no",
        ]
    config = workdir / "redis.conf"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    args = [binary, str(config)]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        for line in process.stdout:
            seen.append(line.rstrip())
            if READY in line or len(seen) >= START_LINES:
                break
        if not any(READY in line for line in seen):
            missing("the private redis-server did not start:\n" + "\n".join(seen[-10:]))
        yield PrivateRedis(port, user, password, tls_dir is not None)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
