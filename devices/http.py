"""A small asyncio HTTP/1.1 client for package downloads, one connection per fetch.

A device opens a connection, sends one GET and reads the answer until the body ends,
then closes; no pooling, so a fleet of thousands of downloads costs each download only
its own socket (a shared pool's bookkeeping grows with every connection it holds). The
body is a `Content-Length` body, or one that runs until the server closes; chunked
transfer coding is refused (the download edge never sends it). http and https (the
default TLS context, or the one given). `slots` caps the fetches in flight for the
whole client: the rest wait their turn, as a fleet's uplink would make them.

The request and response head are built and parsed by pure functions (`request_head`,
`parse_head`, `body_length`); `HttpClient.get` is the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
CLOSE_WAIT_S = 1.0  # how long closing a download connection may wait for the peer
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class HttpError(Exception):
    """The server's answer was malformed, or the connection failed or timed out."""


@dataclass(frozen=True)
class Target:
    """Where a URL points: scheme, host, port and the request target (path and query)."""

    https: bool
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        default = 443 if self.https else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@functools.lru_cache(maxsize=1024)  # a fleet fetches one package URL many times (v1)
def parse_url(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HttpError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise HttpError(f"bad URL {url!r}: scheme must be http or https")
    if not parts.hostname:
        raise HttpError(f"bad URL {url!r}: no host")
    https = parts.scheme == "https"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(https, parts.hostname, port or (443 if https else 80), path)


def request_head(target: Target, headers: Mapping[str, str]) -> bytes:
    """`GET` with Host and `Connection: close`, then the caller's headers."""
    lines = [f"GET {target.path} HTTP/1.1", f"Host: {target.host_header}", "Connection: close"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise HttpError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class Head:
    status: int
    headers: dict[str, str]  # names lower-cased; repeated fields joined with ", "


def parse_head(raw: bytes) -> Head:
    """The status line and header fields of a response head (ending in a blank line)."""
    lines = raw.split(b"\r\n")
    while lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise HttpError("empty response head")
    version, _, rest = lines[0].partition(b" ")
    code, _, _reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HttpError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise HttpError(f"bad header line {line[:80]!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Head(int(code), headers)


def body_length(head: Head) -> int | None:
    """Bytes of body to read: `Content-Length`, or None (until the server closes)."""
    if "transfer-encoding" in head.headers:
        raise HttpError(
            f"unsupported transfer encoding {head.headers['transfer-encoding']!r} "
            "(only Content-Length bodies)"
        )
    if head.status in (204, 304) or 100 <= head.status < 200:
        return 0
    raw = head.headers.get("content-length")
    if raw is None:
        return None
    values = {v.strip() for v in raw.split(",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise HttpError(f"bad Content-Length {raw!r}")
    return int(value)


class Response:
    """A response whose body is read in chunks, within the read timeout of each chunk."""

    def __init__(self, head: Head, reader: asyncio.StreamReader, read_timeout_s: float) -> None:
        self.status = head.status
        self.headers = head.headers
        self._reader = reader
        self._left = body_length(head)
        self._timeout_s = read_timeout_s

    async def chunks(self) -> AsyncIterator[bytes]:
        while self._left != 0:
            wanted = READ_CHUNK if self._left is None else min(READ_CHUNK, self._left)
            try:
                async with asyncio.timeout(self._timeout_s):
                    chunk = await self._reader.read(wanted)
            except TimeoutError:
                raise HttpError(f"no body bytes for {self._timeout_s}s") from None
            except OSError as exc:
                raise HttpError(f"reading the body: {exc!r}") from exc
            if not chunk:
                if self._left is None:
                    return
                raise HttpError(f"connection closed with {self._left} body bytes missing")
            if self._left is not None:
                self._left -= len(chunk)
            yield chunk


class HttpClient:
    def __init__(
        self,
        *,
        slots: int = 2048,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._ssl = ssl_context

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Response]:
        """Open a connection, send the GET, yield the response; the connection is closed
        when the block ends. Raises HttpError for any failure of the exchange."""
        target = parse_url(url)
        head = request_head(target, headers)
        async with self._slots:
            reader, writer = await self._connect(target)
            try:
                writer.write(head)
                yield Response(await self._read_head(reader), reader, self._read_timeout_s)
            finally:
                writer.close()
                # Until the transport is gone its socket is open: a caller that ends its
                # loop right after would leak it. Bounded: TLS close waits for the peer.
                with contextlib.suppress(OSError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT_S)

    async def _connect(self, target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context: ssl.SSLContext | None = None
        if target.https:
            context = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await asyncio.open_connection(
                    target.host, target.port, ssl=context, limit=MAX_HEAD_BYTES
                )
        except TimeoutError:
            raise HttpError(f"connecting to {target.host_header}: timed out") from None
        except OSError as exc:  # refused, unreachable, TLS handshake (ssl.SSLError)
            raise HttpError(f"connecting to {target.host_header}: {exc!r}") from exc

    async def _read_head(self, reader: asyncio.StreamReader) -> Head:
        try:
            async with asyncio.timeout(self._read_timeout_s):
                raw = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise HttpError(f"no response head within {self._read_timeout_s}s") from None
        except asyncio.LimitOverrunError:
            raise HttpError(f"response head over {MAX_HEAD_BYTES} bytes") from None
        except asyncio.IncompleteReadError as exc:
            raise HttpError(
                f"connection closed after {len(exc.partial)} bytes of the response head"
            ) from None
        except OSError as exc:
            raise HttpError(f"reading the response head: {exc!r}") from exc
        return parse_head(raw)
