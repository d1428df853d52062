"""The small-range shortcut (`Connection._send_small`): a request that follows another on
the same connection, for the same target and credentials, answered in one step. Each
test compares it with the general path (the first request of a fresh connection) or
drives the cases it must hand back: expiry, other requests, partial writes, TLS.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from download_edge import connection as edge_connection
from download_edge import repeats
from download_edge.connection import Connection
from ota.settings import CommonSettings
from ota.tokens import verify

from .edge_support import Package, RunningEdge

Reply = tuple[int, list[tuple[str, str]], bytes]
WARM_UP = "bytes=0-9"  # the request that leaves a grant on the connection


def _reply(
    conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str]
) -> Reply:
    conn.request(method, path, headers=headers)
    reply = conn.getresponse()
    body = reply.read()
    kept = [(name, value) for name, value in reply.getheaders() if name != "Date"]
    return reply.status, kept, body


def _fresh(edge: RunningEdge, method: str, path: str, headers: dict[str, str]) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        return _reply(conn, method, path, headers)
    finally:
        conn.close()


def _after_warm_up(
    edge: RunningEdge,
    package: Package,
    auth: dict[str, str],
    method: str,
    path: str,
    headers: dict[str, str],
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        status, _, _ = _reply(conn, "GET", package.path, {**auth, "Range": WARM_UP})
        assert status == 206
        return _reply(conn, method, path, headers)
    finally:
        conn.close()


@pytest.fixture
def auth(package: Package, token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(package.sha256)}"}


SIZE = 3 * 1024 * 1024 + 123  # conftest.PACKAGE_BYTES


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("GET", {"Range": "bytes=0-4095"}),
        ("GET", {"Range": "bytes=4096-8191"}),
        ("GET", {"Range": "bytes=100-16483"}),  # 16 KiB: the largest the shortcut takes
        ("GET", {"Range": "bytes=100-16484"}),  # a byte more: sendfile
        ("GET", {"Range": f"bytes={SIZE - 10}-{SIZE + 100}"}),  # clamped to the end
        ("GET", {"Range": "bytes=007-0000000000000000019"}),
        ("GET", {"Range": "bytes=5-4"}),  # 400
        ("GET", {"Range": f"bytes={SIZE}-{SIZE + 5}"}),  # 416
        ("GET", {"Range": "bytes=-10"}),
        ("GET", {"Range": "bytes=10-"}),
        ("GET", {"Range": "Bytes=0-9"}),
        ("GET", {"Range": "bytes= 0-9"}),
        ("GET", {"Range": "items=0-9"}),  # another unit: the whole package
        ("GET", {"Range": "bytes=0-9", "If-Range": '"not-the-etag"'}),
        ("GET", {"Range": "bytes=0-9", "If-Range": "ETAG"}),
        ("HEAD", {"Range": "bytes=0-9"}),
        ("GET", {}),
        ("POST", {"Range": "bytes=0-9", "Content-Length": "0"}),
    ],
)
def test_same_answer_as_a_fresh_connection(
    edge: RunningEdge,
    package: Package,
    auth: dict[str, str],
    method: str,
    extra: dict[str, str],
) -> None:
    etag = f'"{package.sha256}"'
    headers = {**auth, **{k: v.replace("ETAG", etag) for k, v in extra.items()}}
    general = _fresh(edge, method, package.path, headers)
    shortcut = _after_warm_up(edge, package, auth, method, package.path, headers)
    assert shortcut == general
    if general[0] in (200, 206) and method == "GET":
        assert general[2] in package.data


@pytest.mark.parametrize(
    "change",
    ["other-device", "other-package", "forged", "query-token", "no-token", "other-path"],
)
def test_other_credentials_or_targets_are_checked_afresh(
    edge: RunningEdge,
    package: Package,
    auth: dict[str, str],
    token_for: Callable[..., str],
    change: str,
) -> None:
    path = package.path
    headers = {"Range": "bytes=0-99"}
    if change == "other-device":
        headers["Authorization"] = f"Bearer {token_for(package.sha256, device_id='dev-2')}"
    elif change == "other-package":
        headers["Authorization"] = f"Bearer {token_for('cd' * 32)}"
    elif change == "forged":
        headers["Authorization"] = auth["Authorization"][:-4] + "AAAA"
    elif change == "query-token":
        path = f"{path}?token={auth['Authorization'].removeprefix('Bearer ')}"
    elif change == "other-path":
        path = "/packages/sha256/" + "cd" * 32
        headers.update(auth)
    general = _fresh(edge, "GET", path, headers)
    shortcut = _after_warm_up(edge, package, auth, "GET", path, headers)
    assert shortcut == general
    assert (
        general[0]
        == {
            "other-device": 206,
            "other-package": 403,
            "forged": 403,
            "query-token": 206,
            "no-token": 401,
            "other-path": 403,
        }[change]
    )


def test_expiry_is_checked_on_every_request(
    edge: RunningEdge,
    package: Package,
    token_for: Callable[..., str],
    common: CommonSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = token_for(package.sha256, expires_in_s=100)
    auth = {"Authorization": f"Bearer {token}"}
    expires_s = verify(
        common.token_keys, token, package_sha256=package.sha256, now_s=int(time.time())
    ).expires_s
    assert expires_s is not None
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    assert _reply(conn, "GET", package.path, {**auth, "Range": "bytes=0-9"})[0] == 206
    assert _reply(conn, "GET", package.path, {**auth, "Range": "bytes=10-19"})[0] == 206
    monkeypatch.setattr(edge_connection, "now_s", lambda: expires_s)
    assert _reply(conn, "GET", package.path, {**auth, "Range": "bytes=20-29"})[0] == 410
    conn.close()


def test_connection_close_is_honoured(
    edge: RunningEdge, package: Package, auth: dict[str, str]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    _reply(conn, "GET", package.path, {**auth, "Range": "bytes=0-9"})
    status, headers, body = _reply(
        conn, "GET", package.path, {**auth, "Range": "bytes=10-19", "Connection": "close"}
    )
    assert (status, body) == (206, package.data[10:20])
    assert ("Connection", "close") in headers
    conn.close()


def _read_replies(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """`count` pipelined replies: (head, body) each, by Content-Length."""
    buffer, replies = b"", list[tuple[bytes, bytes]]()
    while len(replies) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buffer += chunk
        replies.append((head, buffer[:length]))
        buffer = buffer[length:]
    return replies


def test_a_partly_taken_answer_is_finished_by_the_writer(
    edge: RunningEdge,
    package: Package,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that pipelines many 16 KiB ranges and reads nothing fills the socket:
    the kernel takes part of an answer and the writer sends the rest, in order."""
    rests: list[int] = []
    send_rest = Connection._send_rest

    def counting(self: Connection, *args: Any) -> None:
        rests.append(1)
        send_rest(self, *args)

    monkeypatch.setattr(Connection, "_send_rest", counting)
    span, count = 16 * 1024, 30  # 30 requests: under the 8 KiB a chunk of heads may hold
    one = (
        f"GET {package.path} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {auth['Authorization']}\r\nRange: bytes=%d-%d\r\n\r\n"
    )
    requests = "".join(one % (i * span, i * span + span - 1) for i in range(count)).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", edge.port))
        sock.sendall((one % (0, 9)).encode())
        assert _read_replies(sock, 1)[0][1] == package.data[:10]
        # A small send buffer on the edge's side too, or loopback takes 30 answers whole.
        assert edge.server is not None
        (server_side,) = edge.server.connections
        edge_socket = server_side._transport.get_extra_info("socket")
        edge_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.sendall(requests)
        replies = _read_replies(sock, count)
    assert [body for _, body in replies] == [
        package.data[i * span : (i + 1) * span] for i in range(count)
    ]
    assert all(head.startswith(b"HTTP/1.1 206 ") for head, _ in replies)
    assert rests, "the kernel took every answer whole: the test did not reach the rest path"


def test_a_denied_request_is_denied_each_time(
    edge: RunningEdge, package: Package, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template of a connection (its last request, recognised again without parsing)
    never carries one request's grant over to another's credentials."""
    recognised: list[tuple[int, int]] = []
    range_of = repeats.range_of

    def counting(template: repeats.Template, data: bytes) -> tuple[int, int] | None:
        found = range_of(template, data)
        if found is not None:
            recognised.append(found)
        return found

    monkeypatch.setattr(repeats, "range_of", counting)
    assert _fresh(edge, "GET", package.path, {**auth, "Range": WARM_UP})[0] == 206  # opens it
    forged = {"Authorization": auth["Authorization"][:-4] + "AAAA"}
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    sequence = [auth, auth, forged, forged, auth, forged, auth, auth, {}, {}]
    statuses = []
    for index, headers in enumerate(sequence):
        start = index * 100
        reply = _reply(
            conn, "GET", package.path, {**headers, "Range": f"bytes={start}-{start + 9}"}
        )
        statuses.append(reply[0])
        if reply[0] == 206:
            assert reply[2] == package.data[start : start + 10]
    conn.close()
    assert statuses == [206, 206, 403, 403, 206, 403, 206, 206, 401, 401]
    assert recognised == [(100, 109), (700, 709)]  # the 2nd and the 8th


def test_a_request_split_over_reads(
    edge: RunningEdge, package: Package, auth: dict[str, str]
) -> None:
    one = (
        f"GET {package.path} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {auth['Authorization']}\r\nRange: bytes=%d-%d\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in (0, 100, 200):
            sock.sendall((one % (start, start + 9)).encode())
            assert _read_replies(sock, 1)[0][1] == package.data[start : start + 10]
        request = (one % (300, 309)).encode()
        for cut in (5, len(request) - 20, len(request) - 2):
            sock.sendall(request[:cut])
            time.sleep(0.05)  # let the edge read the first part on its own
            sock.sendall(request[cut:])
            assert _read_replies(sock, 1)[0][1] == package.data[300:310]
        sock.sendall(request + request[:10])  # one request and the start of another
        time.sleep(0.05)
        sock.sendall(request[10:])
        assert [body for _, body in _read_replies(sock, 2)] == [package.data[300:310]] * 2
