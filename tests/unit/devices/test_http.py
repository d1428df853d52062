"""The download client's pure parts: URLs, request heads, response heads, body length."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.http import (
    Head,
    HttpError,
    Target,
    body_length,
    parse_head,
    parse_url,
    request_head,
)


def test_parse_url_defaults_and_query() -> None:
    assert parse_url("http://127.0.0.1:8080/packages/sha256/ab?token=t") == Target(
        False, "127.0.0.1", 8080, "/packages/sha256/ab?token=t"
    )
    assert parse_url("https://edge.example") == Target(True, "edge.example", 443, "/")
    assert parse_url("http://[::1]/p").host_header == "[::1]"
    assert parse_url("https://h:8443/p").host_header == "h:8443"
    assert parse_url("http://h:80/p").host_header == "h"


@pytest.mark.parametrize(
    ("url", "reason"),
    [("ftp://h/p", "scheme"), ("http:///p", "no host"), ("http://h:99999/p", "bad URL")],
)
def test_parse_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(HttpError, match=reason):
        parse_url(url)


def test_request_head_carries_host_close_and_headers() -> None:
    head = request_head(parse_url("http://h:81/p?x=1"), {"Range": "bytes=5-", "If-Range": '"e"'})
    assert head == (
        b"GET /p?x=1 HTTP/1.1\r\nHost: h:81\r\nConnection: close\r\n"
        b'Range: bytes=5-\r\nIf-Range: "e"\r\n\r\n'
    )


def test_request_head_refuses_header_injection() -> None:
    with pytest.raises(HttpError, match="line break"):
        request_head(parse_url("http://h/p"), {"Authorization": "Bearer t\r\nX: y"})


def test_parse_head_status_and_headers() -> None:
    head = parse_head(
        b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n"
        b'ETag: "abc"\r\nX-A: 1\r\nx-a:  2 \r\n\r\n'
    )
    assert head == Head(206, {"content-length": "10", "etag": '"abc"', "x-a": "1, 2"})
    assert parse_head(b"HTTP/1.0 200\r\n\r\n").status == 200  # the reason is optional


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
    ],
)
def test_parse_head_refuses_malformed(raw: bytes) -> None:
    with pytest.raises(HttpError):
        parse_head(raw)


@pytest.mark.parametrize(
    ("headers", "status", "length"),
    [
        ({"content-length": "42"}, 200, 42),
        ({"content-length": "7, 7"}, 206, 7),
        ({}, 200, None),
        ({"content-length": "5"}, 304, 0),
    ],
)
def test_body_length(headers: dict[str, str], status: int, length: int | None) -> None:
    assert body_length(Head(status, headers)) == length


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"transfer-encoding": "chunked"}, "transfer encoding 'chunked'"),
        ({"content-length": "-1"}, "Content-Length"),
        ({"content-length": "1, 2"}, "Content-Length"),
        ({"content-length": "ten"}, "Content-Length"),
    ],
)
def test_body_length_refuses(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(HttpError, match=reason):
        body_length(Head(200, headers))


_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z")
_values = st.from_regex(r"\A[!-~]([ !-~]{0,30}[!-~])?\Z")


@given(
    st.integers(100, 599),
    st.dictionaries(_names, _values, max_size=8).map(
        lambda d: {k.lower(): v for k, v in d.items()}
    ),
)
def test_parse_head_reads_what_a_server_writes(status: int, headers: dict[str, str]) -> None:
    raw = f"HTTP/1.1 {status} Reason Phrase\r\n".encode()
    raw += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
    assert parse_head(raw) == Head(status, headers)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_clearly(raw: bytes) -> None:
    try:
        head = parse_head(raw)
    except HttpError:
        return
    assert 0 <= head.status <= 999
    with contextlib.suppress(HttpError):
        body_length(head)
