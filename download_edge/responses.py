"""Response heads and bodies as data: which bytes of a package answer a request.

Pure: given the request's Range/If-Range and the package's size and digest, `for_package`
returns a `Plan` (status line and headers as bytes, then the body as a sequence of
in-memory bytes and file spans). The connection writes a plan; it never decides one.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from email.utils import formatdate

from download_edge import ranges
from download_edge.ranges import ByteRange

REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
OCTETS = "application/octet-stream"


# FileSpan and Plan are built on every request; not frozen, since a frozen dataclass's
# __init__ costs three times as much. Nothing changes them after construction.
@dataclass(slots=True)
class FileSpan:
    """`count` bytes of the package file from `offset`."""

    offset: int
    count: int


Body = tuple[bytes | FileSpan, ...]


@dataclass(slots=True)
class Plan:
    status: int
    head: bytes
    body: Body = ()
    keep_alive: bool = True
    has_file: bool = False  # the body reads the package (else it is all in `head`/`body`)
    first_offset: int = 0  # where in the package the body starts


class _Date:
    """The Date header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def at(self, now_s: int) -> str:
        if now_s != self._second:
            self._second, self._value = now_s, formatdate(now_s, usegmt=True)
        return self._value


_date = _Date()


def head(status: int, headers: list[tuple[str, str]], *, keep_alive: bool, now_s: int) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        "Server: ota-edge",
        f"Date: {_date.at(now_s)}",
        *(f"{name}: {value}" for name, value in headers),
        "Connection: keep-alive" if keep_alive else "Connection: close",
        "\r\n",
    ]
    return "\r\n".join(lines).encode("latin-1")


def head_for_file(
    status: int,
    length: int,
    content_range: str | None,
    etag: str,
    keep_alive: bool,
    now_s: int,
) -> bytes:
    """The head of a 200/206 with a package body: cached parts around the two numbers."""
    range_line = f"Content-Range: {content_range}\r\n" if content_range else ""
    return f"{_lead(status, now_s)}{length}\r\n{range_line}{_tail(etag, keep_alive)}".encode(
        "latin-1"
    )


def range_head(package_sha256: str, first: int, last: int, size: int, now_s: int) -> bytes:
    """The head `for_package` gives a keep-alive GET of one range, in one format call."""
    return b"%b%d\r\nContent-Range: bytes %d-%d/%d\r\n%b" % (
        _lead_bytes(now_s),
        last - first + 1,
        first,
        last,
        size,
        _package_tail(package_sha256),
    )


@functools.lru_cache(maxsize=4)
def _lead_bytes(now_s: int) -> bytes:
    return _lead(206, now_s).encode("latin-1")


@functools.lru_cache(maxsize=4096)
def _package_tail(package_sha256: str) -> bytes:
    return _tail(etag_of(package_sha256), True).encode("latin-1")


@functools.lru_cache(maxsize=8)
def _lead(status: int, now_s: int) -> str:
    """A package head up to its Content-Length value: changes once a second."""
    return (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nServer: ota-edge\r\nDate: {_date.at(now_s)}\r\n"
        f"Content-Type: {OCTETS}\r\nContent-Length: "
    )


@functools.lru_cache(maxsize=4096)
def _tail(etag: str, keep_alive: bool) -> str:
    """A package head after its Content-Range: the same for every request of a package."""
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"Accept-Ranges: bytes\r\nETag: {etag}\r\nX-Content-Type-Options: nosniff\r\n"
        f"Cache-Control: private, no-transform\r\nConnection: {connection}\r\n\r\n"
    )


def error(
    status: int,
    reason: str,
    *,
    keep_alive: bool,
    now_s: int,
    extra: tuple[tuple[str, str], ...] = (),
    with_body: bool = True,
) -> Plan:
    """A short plain-text error; `with_body=False` for HEAD (same headers, no body)."""
    text = f"{reason}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(text))),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
        *extra,
    ]
    return Plan(
        status,
        head(status, headers, keep_alive=keep_alive, now_s=now_s),
        (text,) if with_body else (),
        keep_alive,
    )


def etag_of(package_sha256: str) -> str:
    return f'"{package_sha256}"'


def for_package(
    *,
    method: str,
    package_sha256: str,
    size: int,
    range_header: str | None,
    if_range: str | None,
    keep_alive: bool,
    now_s: int,
    max_ranges: int = ranges.DEFAULT_MAX_RANGES,
    boundary: str | None = None,
) -> Plan:
    """The answer to a GET or HEAD of a package the client may have."""
    etag = etag_of(package_sha256)
    selected: tuple[ByteRange, ...] | None = None
    # RFC 9110 14.2: Range applies to GET only, and only while If-Range still matches.
    if method == "GET" and range_header is not None and ranges.if_range_allows(if_range, etag):
        try:
            selected = ranges.parse_range(range_header, size, max_ranges=max_ranges)
        except (ranges.Unsupported, ranges.TooComplex):
            selected = None  # answered with the whole package
        except ranges.Malformed as exc:
            return error(400, f"bad Range: {exc}", keep_alive=keep_alive, now_s=now_s)
        except ranges.NotSatisfiable:
            return error(
                416,
                "range not satisfiable",
                keep_alive=keep_alive,
                now_s=now_s,
                extra=(
                    ("Content-Range", ranges.unsatisfied_range(size)),
                    ("Accept-Ranges", "bytes"),
                    ("ETag", etag),
                ),
            )
    if selected is None:
        whole = head_for_file(200, size, None, etag, keep_alive, now_s)
        if method != "GET" or not size:
            return Plan(200, whole, (), keep_alive)
        return Plan(200, whole, (FileSpan(0, size),), keep_alive, True, 0)
    if len(selected) == 1:
        part = selected[0]
        return Plan(
            206,
            head_for_file(
                206, part.length, ranges.content_range(part, size), etag, keep_alive, now_s
            ),
            (FileSpan(part.start, part.length),),
            keep_alive,
            True,
            part.start,
        )
    common = [
        ("Accept-Ranges", "bytes"),
        ("ETag", etag),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "private, no-transform"),
    ]
    return _multipart(selected, size, common, keep_alive, now_s, boundary or secrets.token_hex(16))


def _multipart(
    selected: tuple[ByteRange, ...],
    size: int,
    common: list[tuple[str, str]],
    keep_alive: bool,
    now_s: int,
    boundary: str,
) -> Plan:
    body: list[bytes | FileSpan] = []
    for index, part in enumerate(selected):
        lead = "\r\n" if index else ""
        body.append(
            f"{lead}--{boundary}\r\nContent-Type: {OCTETS}\r\n"
            f"Content-Range: {ranges.content_range(part, size)}\r\n\r\n".encode("ascii")
        )
        body.append(FileSpan(part.start, part.length))
    body.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    length = sum(p.count if isinstance(p, FileSpan) else len(p) for p in body)
    headers = [
        ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
        ("Content-Length", str(length)),
        *common,
    ]
    head_bytes = head(206, headers, keep_alive=keep_alive, now_s=now_s)
    return Plan(206, head_bytes, tuple(body), keep_alive, True, selected[0].start)
