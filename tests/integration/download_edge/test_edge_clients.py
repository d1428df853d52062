"""Real download clients: curl and wget resume a cut download; If-Range after a cut."""

from __future__ import annotations

import hashlib
import http.client
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from .edge_support import Package, RunningEdge, require_tool


def url(edge: RunningEdge, package: Package) -> str:
    return f"http://127.0.0.1:{edge.port}{package.path}"


def test_curl_resumes(
    edge: RunningEdge, package: Package, token_for: Callable[..., str], tmp_path: Path
) -> None:
    target = tmp_path / "pkg"
    target.write_bytes(package.data[:1_000_000])  # what an interrupted download left
    subprocess.run(
        [
            require_tool("curl"),
            "-sSf",
            "-C",
            "-",
            "-o",
            str(target),
            "-H",
            f"Authorization: Bearer {token_for(package.sha256)}",
            url(edge, package),
        ],
        check=True,
        timeout=60,
    )
    assert hashlib.sha256(target.read_bytes()).hexdigest() == package.sha256


def test_wget_resumes_with_a_presigned_url(
    edge: RunningEdge, package: Package, token_for: Callable[..., str], tmp_path: Path
) -> None:
    target = tmp_path / "pkg"
    target.write_bytes(package.data[:777_777])
    subprocess.run(
        [
            require_tool("wget"),
            "-q",
            "-c",
            "-O",
            str(target),
            f"{url(edge, package)}?token={token_for(package.sha256)}",
        ],
        check=True,
        timeout=60,
    )
    assert hashlib.sha256(target.read_bytes()).hexdigest() == package.sha256


def test_cut_download_resumed_with_if_range(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    token = token_for(package.sha256)
    received = b""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(
            f"GET {package.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        while len(received) < 500_000:
            received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert package.data.startswith(body)
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    conn.request(
        "GET",
        package.path,
        headers={
            "Authorization": f"Bearer {token}",
            "Range": f"bytes={len(body)}-",
            "If-Range": f'"{package.sha256}"',
        },
    )
    reply = conn.getresponse()
    assert reply.status == 206
    rest = reply.read()
    conn.close()
    assert hashlib.sha256(body + rest).hexdigest() == package.sha256
