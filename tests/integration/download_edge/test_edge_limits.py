"""Limits: slowloris, idle and stalled connections, header size, connection cap, slow clients."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable

from tests.waiting import wait_until

from .edge_support import EdgeFactory, Package, RunningEdge, get


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slowloris_headers_get_408(edge: RunningEdge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /packages/sha256/ HTTP/1.1\r\nHost: x\r\nX-a: ")
        assert read_all(sock).startswith(b"HTTP/1.1 408")


def test_silent_connection_is_closed(edge: RunningEdge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        assert read_all(sock) == b""


def test_idle_keep_alive_connection_is_closed(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(
            f"GET {package.path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n"
            f"Authorization: Bearer {token_for(package.sha256)}\r\n\r\n".encode()
        )
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 206")
    assert reply.endswith(package.data[:2])


def test_oversized_header_gets_431(edge: RunningEdge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431")


def test_pipelined_requests_longer_than_the_header_limit_are_served(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    """Many small requests in one write exceed the header limit together, not one by one."""
    request = (
        f"GET {package.path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n"
        f"Authorization: Bearer {token_for(package.sha256)}\r\n\r\n"
    ).encode()
    count = 2 * 8192 // len(request) + 2  # twice the default limit of 8 KiB
    last = request.replace(b"Host: x", b"Host: x\r\nConnection: close")
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(request * (count - 1) + last)
        reply = read_all(sock)
    assert reply.count(b"HTTP/1.1 206") == count
    assert b"HTTP/1.1 431" not in reply


def test_too_many_headers_get_400(edge: RunningEdge) -> None:
    headers = b"".join(b"X-%d: 1\r\n" % n for n in range(100))
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 400")


def test_connection_cap(edge_factory: EdgeFactory, package: Package) -> None:
    edge = edge_factory(max_connections=2, header_timeout_s=30.0)
    held = [socket.create_connection(("127.0.0.1", edge.port), timeout=10) for _ in range(2)]
    try:
        wait_until(lambda: edge.connections() == 2)
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as third:
            assert read_all(third).startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()


def test_stalled_download_is_dropped(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(
            f"GET {package.path} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token_for(package.sha256)}\r\n\r\n".encode()
        )
        wait_until(lambda: edge.connections() == 1)
        # The client reads nothing; the edge gives up after idle_timeout_s without progress.
        wait_until(lambda: edge.connections() == 0)


def test_slow_client_does_not_hold_up_others(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    token = token_for(package.sha256)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        slow.sendall(
            f"GET {package.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        received = [slow.recv(4096)]
        reply, body = get(edge, package.path, {"Authorization": f"Bearer {token}"})
        assert reply.status == 200
        assert body == package.data
        while chunk := slow.recv(8192):
            received.append(chunk)
    body = b"".join(received).partition(b"\r\n\r\n")[2]
    assert hashlib.sha256(body).hexdigest() == package.sha256


def test_rate_limited_device_gets_every_byte(
    edge_factory: EdgeFactory, package: Package, token_for: Callable[..., str]
) -> None:
    edge = edge_factory(rate_limit_bytes_s=4 * 1024 * 1024)
    reply, body = get(edge, package.path, {"Authorization": f"Bearer {token_for(package.sha256)}"})
    assert reply.status == 200
    assert body == package.data
