"""Delivered bytes are bytes the client got: a client that reads part of an answer and
disconnects is recorded with at most what reached it, over TLS and plain TCP, and its
download still finishes when it resumes where its copy ends.

Real sockets and the real Redis (db 12, the edge's test db). The download records go to a
sink that never acknowledges them, so a finished download's hash stays to be read (the
edge deletes it once Kafka has taken its records: test_edge_events.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import trustme

from devices.download import Download, fetch
from devices.http import HttpClient
from download_edge.delivery import TLS_UNSEEN_BYTES
from download_edge.progress import hash_key
from ota.redis_clients import make_redis
from ota.settings import CommonSettings
from tests.waiting import wait_until

from .edge_support import EdgeFactory, Package, RunningEdge, write_package

EDGE_TEST_DB = 12
PACKAGE_MIB = 24  # far more than the loopback's socket buffers hold on both sides
READ_BYTES = 512 * 1024
RCVBUF = 32 * 1024  # the client's receive buffer, fixed so its size is known
TLS_RECORD = 16 * 1024 + 256  # what an SSL socket may hold between the kernel and recv()


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{EDGE_TEST_DB}"))
    client = make_redis(CommonSettings.from_env({}), url)
    yield client
    client.close()


class UnacknowledgedSink:
    """Takes download records and never acknowledges them."""

    def send(self, topic: str, *, key: bytes, value: bytes) -> None:
        return None

    def flush(self, timeout: float | None = None) -> None:
        return None


@pytest.fixture
def big(tmp_path: Path) -> Package:
    return write_package(tmp_path / "cache", os.urandom(PACKAGE_MIB * 1024 * 1024))


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=["tls", "plain"])
def running(
    request: pytest.FixtureRequest,
    edge_factory: EdgeFactory,
    store: redis.Redis[bytes],
    common: CommonSettings,
    ca: trustme.CA,
    tmp_path: Path,
    big: Package,
) -> RunningEdge:
    tls = {}
    if request.param == "tls":
        cert = ca.issue_cert("127.0.0.1")
        cert_file, key_file = tmp_path / "edge.pem", tmp_path / "edge.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        tls = {"tls_cert": cert_file, "tls_key": key_file}
    return edge_factory(
        store=store,
        sink=UnacknowledgedSink(),
        events=True,
        common=common,
        progress_flush_ms=20,
        **tls,
    )


def _connect(edge: RunningEdge, ca: trustme.CA) -> socket.socket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # before connect: fixed
    raw.settimeout(10)
    raw.connect(("127.0.0.1", edge.port))
    if not edge.settings.tls:
        return raw
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _read_part(sock: socket.socket, request: bytes, body_bytes: int) -> int:
    """Send `request`, read its head and `body_bytes` of its body; the body bytes read."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    got = len(data) - data.index(b"\r\n\r\n") - 4
    while got < body_bytes:
        chunk = sock.recv(min(65536, body_bytes - got))
        assert chunk, "the edge closed before the end"
        got += len(chunk)
    return got


def _delivered(store: redis.Redis[bytes], device: str, sha: str) -> tuple[int, bytes, bytes]:
    """(bytes recorded as delivered, the delivered intervals, the unconfirmed ones)."""
    sent, intervals, unconfirmed = store.hmget(hash_key(device, sha), ["sv", "iv", "ud"])
    return int(sent or 0), intervals or b"", unconfirmed or b""


def test_a_client_that_disconnects_is_recorded_with_what_it_got(
    running: RunningEdge,
    store: redis.Redis[bytes],
    big: Package,
    ca: trustme.CA,
    token_for: Callable[..., str],
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    token = token_for(big.sha256, device_id=device)
    request = (
        f"GET {big.path} HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    sock = _connect(running, ca)
    read = _read_part(sock, request, READ_BYTES)
    # All the client's host can hold beyond what it read: its receive buffer (the kernel's
    # figure, overhead included) and, over TLS, one record inside the SSL socket.
    held = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if running.settings.tls:
        held += TLS_RECORD + TLS_UNSEEN_BYTES + running.settings.tls_buffer_bytes
    sock.close()  # unread bytes: the kernel answers with a reset
    wait_until(lambda: running.connections() == 0)
    wait_until(lambda: _delivered(store, device, big.sha256)[2] != b"")

    sent, intervals, unconfirmed = _delivered(store, device, big.sha256)
    assert sent <= read + held, (sent, read, held)
    assert intervals == f"0:{sent}".encode() or (sent == 0 and intervals == b"")
    assert int(unconfirmed.split(b":")[0]) == sent

    # The device resumes where its copy ends: what it vouches for counts, the rest is sent.
    # The whole answer is read (head, then exactly the body) before closing: a close with
    # unread bytes is a reset, after which the edge cannot tell what the device got.
    resumed = _connect(running, ca)
    ranged = request.replace(b"\r\n\r\n", f"\r\nRange: bytes={read}-\r\n\r\n".encode())
    assert _read_part(resumed, ranged, len(big.data) - read) == len(big.data) - read
    resumed.close()
    wait_until(lambda: store.hget(hash_key(device, big.sha256), "fin") == b"1")
    assert _delivered(store, device, big.sha256)[1] == f"0:{len(big.data)}".encode()


def test_a_whole_download_is_recorded_while_the_connection_stays_open(
    running: RunningEdge,
    store: redis.Redis[bytes],
    big: Package,
    ca: trustme.CA,
    token_for: Callable[..., str],
) -> None:
    """Nothing ends the connection: the edge's sweeper confirms what the client acknowledged."""
    device = f"dev-{uuid.uuid4().hex[:8]}"
    token = token_for(big.sha256, device_id=device)
    sock = _connect(running, ca)
    request = f"GET {big.path} HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {token}\r\n\r\n"
    _read_part(sock, request.encode(), len(big.data))
    wait_until(lambda: store.hget(hash_key(device, big.sha256), "fin") == b"1")
    assert _delivered(store, device, big.sha256)[:2] == (
        len(big.data),
        f"0:{len(big.data)}".encode(),
    )
    sock.close()


def test_the_reference_agents_download_is_recorded_finished(
    running: RunningEdge,
    store: redis.Redis[bytes],
    big: Package,
    ca: trustme.CA,
    token_for: Callable[..., str],
) -> None:
    """The device's client asks `Connection: close`: the edge closes once the answer is
    acknowledged (a plain socket sends its FIN first, so it ends in TCP_CLOSE like a reset
    one), and the download is finished, not left unconfirmed."""
    device = f"dev-{uuid.uuid4().hex[:8]}"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    tls = running.settings.tls
    job = Download(
        url=f"{'https' if tls else 'http'}://127.0.0.1:{running.port}{big.path}",
        size=len(big.data),
        token=token_for(big.sha256, device_id=device),
    )
    asyncio.run(fetch(HttpClient(ssl_context=context if tls else None), job))
    assert job.done
    wait_until(lambda: store.hget(hash_key(device, big.sha256), "fin") == b"1")
    assert _delivered(store, device, big.sha256)[:2] == (
        len(big.data),
        f"0:{len(big.data)}".encode(),
    )
