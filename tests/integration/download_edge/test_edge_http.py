"""HTTP semantics against a running edge, with Python's http.client and raw sockets."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import http.client
from collections.abc import Callable

import pytest

from .edge_support import Package, RunningEdge, get, raw


@pytest.fixture
def auth(package: Package, token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(package.sha256)}"}


def test_whole_package(edge: RunningEdge, package: Package, auth: dict[str, str]) -> None:
    reply, body = get(edge, package.path, auth)
    assert reply.status == 200
    assert body == package.data
    assert reply.getheader("Content-Type") == "application/octet-stream"
    assert reply.getheader("X-Content-Type-Options") == "nosniff"
    assert reply.getheader("Accept-Ranges") == "bytes"
    assert reply.getheader("ETag") == f'"{package.sha256}"'
    assert reply.getheader("Content-Length") == str(len(package.data))


def test_head_has_headers_and_no_body(
    edge: RunningEdge, package: Package, auth: dict[str, str]
) -> None:
    reply, body = get(edge, package.path, {**auth, "Range": "bytes=0-9"}, method="HEAD")
    assert reply.status == 200  # Range applies to GET only
    assert body == b""
    assert reply.getheader("Content-Length") == str(len(package.data))


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=3000000-", 3000000, None),
        ("bytes=-500", -500, None),
        ("bytes=10-99999999999999999999999999", 10, None),
    ],
)
def test_single_ranges(
    edge: RunningEdge,
    package: Package,
    auth: dict[str, str],
    range_header: str,
    start: int,
    end: int | None,
) -> None:
    size = len(package.data)
    expected = package.data[start : None if end is None else end + 1]
    first = start % size
    reply, body = get(edge, package.path, {**auth, "Range": range_header})
    assert reply.status == 206
    assert body == expected
    assert reply.getheader("Content-Range") == f"bytes {first}-{first + len(expected) - 1}/{size}"


def test_multiple_ranges_are_multipart(
    edge: RunningEdge, package: Package, auth: dict[str, str]
) -> None:
    reply, body = get(edge, package.path, {**auth, "Range": "bytes=0-9,5000-5009,-10"})
    assert reply.status == 206
    content_type = reply.getheader("Content-Type") or ""
    assert content_type.startswith("multipart/byteranges; boundary=")
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    assert isinstance(message, email.message.EmailMessage)
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.iter_parts()]
    size = len(package.data)
    assert parts == [
        (f"bytes 0-9/{size}", package.data[:10]),
        (f"bytes 5000-5009/{size}", package.data[5000:5010]),
        (f"bytes {size - 10}-{size - 1}/{size}", package.data[-10:]),
    ]
    assert int(reply.getheader("Content-Length") or 0) == len(body)


def test_if_range(edge: RunningEdge, package: Package, auth: dict[str, str]) -> None:
    matching = {**auth, "Range": "bytes=100-", "If-Range": f'"{package.sha256}"'}
    reply, body = get(edge, package.path, matching)
    assert reply.status == 206
    assert body == package.data[100:]
    stale = {**auth, "Range": "bytes=100-", "If-Range": '"' + "0" * 64 + '"'}
    reply, body = get(edge, package.path, stale)
    assert reply.status == 200
    assert body == package.data


def test_unsatisfiable(edge: RunningEdge, package: Package, auth: dict[str, str]) -> None:
    reply, _ = get(edge, package.path, {**auth, "Range": f"bytes={len(package.data)}-"})
    assert reply.status == 416
    assert reply.getheader("Content-Range") == f"bytes */{len(package.data)}"


@pytest.mark.parametrize(
    ("range_header", "status"),
    [
        ("bytes=abc", 400),
        ("bytes=5-1", 400),
        ("bytes=" + "9" * 4000 + "-", 416),
        ("bytes=0-," + ",".join(f"5-{n}" for n in range(5, 600)), 200),  # Apache killer
        ("pages=1-2", 200),
    ],
)
def test_hostile_ranges(
    edge: RunningEdge, package: Package, auth: dict[str, str], range_header: str, status: int
) -> None:
    reply, body = get(edge, package.path, {**auth, "Range": range_header})
    assert reply.status == status
    if status == 200:
        assert body == package.data


def test_keep_alive_serves_many_requests_on_one_connection(
    edge: RunningEdge, package: Package, auth: dict[str, str]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    for start in range(0, 50_000, 5000):
        conn.request("GET", package.path, headers={**auth, "Range": f"bytes={start}-{start + 99}"})
        reply = conn.getresponse()
        assert reply.status == 206
        assert reply.read() == package.data[start : start + 100]
    conn.close()


def test_pipelined_requests_are_answered_in_order(
    edge: RunningEdge, package: Package, auth: dict[str, str]
) -> None:
    one = (
        f"GET {package.path} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {auth['Authorization']}\r\nRange: bytes=%d-%d\r\n\r\n"
    )
    request = (
        one % (0, 9)
        + one % (10, 19)
        + one.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n") % (20, 29)
    )
    reply = raw(edge, request.encode())
    assert reply.count(b"HTTP/1.1 206") == 3
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in reply.split(b"HTTP/1.1 206")[1:]]
    assert bodies == [package.data[0:10], package.data[10:20], package.data[20:30]]


def test_http10_closes(edge: RunningEdge, package: Package, auth: dict[str, str]) -> None:
    reply = raw(
        edge,
        f"GET {package.path} HTTP/1.0\r\nAuthorization: {auth['Authorization']}\r\n"
        "Range: bytes=0-3\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 206")
    assert b"Connection: close" in reply
    assert reply.endswith(package.data[:4])


def test_other_methods(edge: RunningEdge, package: Package, auth: dict[str, str]) -> None:
    reply, _ = get(edge, package.path, auth, method="DELETE")
    assert reply.status == 405
    assert reply.getheader("Allow") == "GET, HEAD"


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/packages/sha256/",
        "/packages/sha256/../../etc/passwd",
        "/packages/sha256/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/packages/sha256/{sha}/../{sha}",
        "/packages/sha256/{upper}",
        "/packages/sha256/{sha}x",
        "/packages/sha256//{sha}",
        "/packages/sha1/{sha}",
        "//packages/sha256/{sha}",
    ],
)
def test_only_package_paths_exist(
    edge: RunningEdge, package: Package, auth: dict[str, str], target: str
) -> None:
    path = target.format(sha=package.sha256, upper=package.sha256.upper())
    reply = raw(edge, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 404")


def test_bad_requests_get_400(edge: RunningEdge) -> None:
    assert raw(edge, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(edge, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 505")
    upgrade = raw(edge, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
    assert upgrade.startswith(b"HTTP/1.1 404")
    assert upgrade.count(b"HTTP/1.1 ") == 1


def test_symlinked_cache_entry_is_not_followed(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    fake = "f" * 64
    link = edge.settings.cache_dir / "sha256" / fake
    link.symlink_to("/etc/passwd")
    reply, body = get(
        edge, f"/packages/sha256/{fake}", {"Authorization": f"Bearer {token_for(fake)}"}
    )
    assert reply.status == 502
    assert b"root:" not in body
