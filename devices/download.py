"""Resumable package download over HTTP(S), hashing as it goes.

`Range: bytes=N-` continues an interrupted download and `If-Range` (the ETag of the first
response, the package SHA-256) makes the server send the whole file again if it changed,
in which case the hash restarts. v1 commands send `Authorization: Bearer <token>`; v2
URLs carry the token already. A `Download` outlives its URL: a fresh one (a later
command for the same package) continues it where it stopped. Each fetch is one
connection (`devices.http`). Bytes are optionally written to a file; the SHA-256 is
always computed while streaming, so a simulated fleet needs no disk.

Errors: `DownloadError` (with the result code the device reports), and its
`TokenExpired` (410: the token is genuine but past its expiry; only a fresh URL helps).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devices.http import HttpClient, HttpError


class DownloadError(Exception):
    """The download could not finish; `result_code` is what the device reports."""

    def __init__(self, message: str, result_code: int = 6) -> None:
        super().__init__(message)
        self.result_code = result_code


class TokenExpired(DownloadError):  # noqa: N818 - named as the edge's answer says
    """The server refused the token as expired (410): fetching again needs a fresh URL."""


class Interrupted(Exception):  # noqa: N818 - a scripted event, not an error
    """The download was cut on purpose (a device's `drop_download_at`)."""


@dataclass
class Download:
    url: str
    size: int
    token: str | None = None  # v1: sent as a Bearer token
    target: Path | None = None
    package: str = ""  # the command's `sign`: which package this is, across commands
    received: int = 0
    etag: str | None = None
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    resumed: int = 0  # how many times a Range request continued it
    resumed_from: list[int] = field(default_factory=list)  # each continuation's first byte

    def of(self, package: str, size: int) -> bool:
        """This is the download of that package (as a command names it)."""
        return bool(self.package) and self.package == package and self.size == size

    def use(self, url: str, token: str | None) -> None:
        """Go on with a fresh URL (and token); what was received stays."""
        self.url, self.token = url, token

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
            if self.etag:
                headers["If-Range"] = self.etag
        return headers

    @property
    def done(self) -> bool:
        return self.received >= self.size

    def sha256(self) -> str:
        return self.digest.hexdigest()


ProgressHook = Callable[[int], Awaitable[None]]


async def fetch(
    http: HttpClient,
    job: Download,
    *,
    stop_at: int | None = None,
    on_progress: ProgressHook | None = None,
) -> None:
    """Fetch the rest of `job`. Raises Interrupted at `stop_at` bytes (once), DownloadError
    when the server refuses or the connection fails."""
    try:
        async with http.get(job.url, job.headers()) as response:
            if response.status == 200:
                if job.received:
                    job.received, job.digest = 0, hashlib.sha256()  # file changed: start over
            elif response.status == 206:
                start = _range_start(response.headers.get("content-range", ""))
                if start != job.received:
                    raise DownloadError(f"server resumed at {start}, not {job.received}")
                job.resumed += 1
                job.resumed_from.append(start)
            elif response.status == 416 and job.received >= job.size:
                return
            elif response.status == 410:
                raise TokenExpired(f"HTTP 410: the download token expired at {job.received} bytes")
            else:
                raise DownloadError(f"HTTP {response.status} for the package")
            job.etag = response.headers.get("etag", job.etag)
            with _open(job) as sink:
                async for chunk in response.chunks():
                    if stop_at is not None and job.received + len(chunk) >= stop_at:
                        chunk = chunk[: max(0, stop_at - job.received)]
                        _take(job, sink, chunk)
                        raise Interrupted(f"cut at {job.received} bytes")
                    _take(job, sink, chunk)
                    if on_progress is not None:
                        await on_progress(job.received)
    except HttpError as exc:
        raise DownloadError(str(exc)) from exc
    if not job.done:
        raise DownloadError(f"connection closed at {job.received} of {job.size} bytes")


def _take(job: Download, sink: IO[bytes] | None, chunk: bytes) -> None:
    job.digest.update(chunk)
    job.received += len(chunk)
    if sink is not None:
        sink.write(chunk)


def _open(job: Download) -> _Sink:
    return _Sink(job.target, append=job.received > 0)


class _Sink:
    """The target file (appending when resuming), or nothing."""

    def __init__(self, path: Path | None, *, append: bool) -> None:
        self._path, self._append = path, append
        self._file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes] | None:
        if self._path is not None:
            self._file = self._path.open("ab" if self._append else "wb")
        return self._file

    def __exit__(self, *_exc: object) -> None:
        if self._file is not None:
            self._file.close()


def _range_start(content_range: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1
