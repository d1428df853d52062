"""HTTP/1.1 request parsing cost: httptools (llhttp, C) against h11 (pure Python).

Parses the request a device sends when resuming a download (Range, If-Range, Bearer token)
the way the edge would use each parser, and prints microseconds per request (best of 5).

    .venv/bin/python bench/edge_parsers.py
"""

from __future__ import annotations

import timeit

import h11
import httptools

REQUEST = (
    b"GET /packages/sha256/" + b"ab" * 32 + b" HTTP/1.1\r\n"
    b"Host: edge.example\r\n"
    b"User-Agent: device-sdk/1.0\r\n"
    b"Authorization: Bearer v1.dev1.1795745393.ZGV2aWNlLTAwMDE.9JUKVENisFsazwAU00do-x30odKlTck1iXg9Fe95I1E\r\n"
    b"Range: bytes=1048576-\r\n"
    b'If-Range: "' + b"ab" * 32 + b'"\r\n'
    b"\r\n"
)
ROUNDS = 20_000


class _Sink:
    """The callbacks the edge's protocol keeps."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.done += 1


def httptools_keepalive() -> None:
    sink = _Sink()
    parser = httptools.HttpRequestParser(sink)
    for _ in range(ROUNDS):
        parser.feed_data(REQUEST)
        httptools.parse_url(sink.url)
        sink.url = b""
        sink.headers.clear()
    assert sink.done == ROUNDS


def h11_keepalive() -> None:
    conn = h11.Connection(h11.SERVER)
    response = h11.Response(status_code=206, headers=[("Content-Length", "0")])
    for _ in range(ROUNDS):
        conn.receive_data(REQUEST)
        request = conn.next_event()
        assert isinstance(request, h11.Request)
        assert isinstance(conn.next_event(), h11.EndOfMessage)
        conn.send(response)
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


def main() -> None:
    for name, run in (("httptools", httptools_keepalive), ("h11", h11_keepalive)):
        best = min(timeit.repeat(run, number=1, repeat=5))
        print(f"edge.parse_us_{name} = {best / ROUNDS * 1e6:.2f} us/request")


if __name__ == "__main__":
    main()
