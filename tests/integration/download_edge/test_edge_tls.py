"""HTTPS with a test CA: Python's client and curl, whole package and ranges."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from .edge_support import EdgeFactory, Package, RunningEdge, require_tool


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_edge(
    edge_factory: EdgeFactory, package: Package, ca: trustme.CA, tmp_path: Path
) -> RunningEdge:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "edge.pem", tmp_path / "edge.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    return edge_factory(tls_cert=cert_file, tls_key=key_file)


def test_https_whole_and_ranges(
    tls_edge: RunningEdge, package: Package, ca: trustme.CA, token_for: Callable[..., str]
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = http.client.HTTPSConnection("127.0.0.1", tls_edge.port, context=context, timeout=10)
    auth = {"Authorization": f"Bearer {token_for(package.sha256)}"}
    conn.request("GET", package.path, headers=auth)
    reply = conn.getresponse()
    assert reply.status == 200
    assert reply.read() == package.data
    conn.request("GET", package.path, headers={**auth, "Range": "bytes=1000000-"})
    reply = conn.getresponse()
    assert reply.status == 206
    assert reply.read() == package.data[1000000:]
    conn.request("GET", package.path, headers={**auth, "Range": "bytes=0-1,-2"})
    reply = conn.getresponse()
    assert reply.status == 206
    assert package.data[-2:] in reply.read()
    conn.close()


def test_untrusted_client_fails_the_handshake(tls_edge: RunningEdge, package: Package) -> None:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", tls_edge.port, context=ssl.create_default_context(), timeout=10
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", package.path)
    conn.close()


def test_curl_resumes_over_https(
    tls_edge: RunningEdge,
    package: Package,
    ca: trustme.CA,
    token_for: Callable[..., str],
    tmp_path: Path,
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    target = tmp_path / "pkg"
    target.write_bytes(package.data[:2_000_000])
    subprocess.run(
        [
            require_tool("curl"),
            "-sSf",
            "--cacert",
            str(ca_file),
            "-C",
            "-",
            "-o",
            str(target),
            "-H",
            f"Authorization: Bearer {token_for(package.sha256)}",
            f"https://127.0.0.1:{tls_edge.port}{package.path}",
        ],
        check=True,
        timeout=60,
    )
    assert hashlib.sha256(target.read_bytes()).hexdigest() == package.sha256


def test_https_small_ranges_on_one_connection(
    tls_edge: RunningEdge, package: Package, ca: trustme.CA, token_for: Callable[..., str]
) -> None:
    """After the first request, small ranges take the edge's one-write shortcut."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = http.client.HTTPSConnection("127.0.0.1", tls_edge.port, context=context, timeout=10)
    auth = {"Authorization": f"Bearer {token_for(package.sha256)}"}
    for start in range(0, 200_000, 4096):
        conn.request(
            "GET", package.path, headers={**auth, "Range": f"bytes={start}-{start + 4095}"}
        )
        reply = conn.getresponse()
        assert reply.status == 206
        assert (
            reply.getheader("Content-Range") == f"bytes {start}-{start + 4095}/{len(package.data)}"
        )
        assert reply.read() == package.data[start : start + 4096]
    conn.close()
