"""A tiny HTTP/1.1 package server for device tests: token check, Range and If-Range.

Serves `/packages/sha256/<hex>` from memory. A request needs `Authorization: Bearer
<token>` or `?token=<token>` equal to the server's token. http, or https with `tls`. `Range: bytes=N-` gets 206
unless `If-Range` differs from the ETag (then 200, the whole file). Every request's
headers are kept for assertions. Test-only: the platform's own edge is download_edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class PackageServer:
    token: str = "secret-token"
    packages: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    tls: ssl.SSLContext | None = None  # serve https with this context
    _server: asyncio.Server | None = None

    def add(self, body: bytes) -> str:
        sha = hashlib.sha256(body).hexdigest()
        self.packages[sha] = body
        return sha

    def url(self, sha: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/packages/sha256/{sha}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                headers[":path"] = target
                self.requests.append(headers)
                writer.write(self._respond(method, target, headers))
                await writer.drain()
        except (ConnectionError, ValueError):
            return
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    def _respond(self, method: str, target: str, headers: dict[str, str]) -> bytes:
        url = urlsplit(target)
        token = parse_qs(url.query).get("token", [None])[0]
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        if token != self.token:
            return _reply(403, b"forbidden")
        sha = url.path.removeprefix("/packages/sha256/")
        body = self.packages.get(sha)
        if method != "GET" or body is None:
            return _reply(404, b"not found")
        etag = f'"{sha}"'
        wanted = headers.get("range", "")
        if wanted.startswith("bytes=") and headers.get("if-range", etag) == etag:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                return _reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
            extra = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}", "ETag": etag}
            return _reply(206, body[start:], extra)
        return _reply(200, body, {"ETag": etag})


def _reply(status: int, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    reason = {
        200: "OK",
        206: "Partial Content",
        403: "Forbidden",
        404: "Not Found",
        416: "Range Not Satisfiable",
    }[status]
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Accept-Ranges: bytes"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
