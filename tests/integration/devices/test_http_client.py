"""The download client against real sockets: TLS, resume, and every way an answer can
be wrong (each a DownloadError with a clear reason, never a hang or a crash)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from devices.download import Download, DownloadError, Interrupted, fetch
from devices.http import HttpClient
from tests.integration.devices.package_server import PackageServer

BODY = bytes(range(256)) * 300

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    """A server that answers every connection with `script`; yields its package URL."""

    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await script(reader, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await handle(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/packages/sha256/x"
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5)


def answer(raw: bytes) -> Script:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)

    return script


async def test_https_download_and_resume_with_a_trusted_ca() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    packages = PackageServer(tls=server_context)
    await packages.start()
    try:
        sha = packages.add(BODY)
        job = Download(url=packages.url(sha), size=len(BODY), token=packages.token)
        http = HttpClient(ssl_context=client_context)
        with pytest.raises(Interrupted):
            await fetch(http, job, stop_at=10_000)
        await fetch(http, job)
        assert job.sha256() == sha
        assert job.resumed == 1
        assert packages.requests[-1]["range"] == "bytes=10000-"
        untrusted = Download(url=packages.url(sha), size=len(BODY), token=packages.token)
        with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(HttpClient(), untrusted)
    finally:
        await packages.stop()


async def test_progress_is_reported_and_a_changed_file_restarts() -> None:
    packages = PackageServer()
    await packages.start()
    try:
        sha = packages.add(BODY)
        seen: list[int] = []

        async def progress(received: int) -> None:
            seen.append(received)

        job = Download(url=packages.url(sha), size=len(BODY), token=packages.token)
        job.received, job.etag = 100, '"stale"'
        job.digest.update(b"x" * 100)
        await fetch(HttpClient(), job, on_progress=progress)
        assert job.sha256() == sha  # 200: hashed again from the start
        assert job.resumed == 0
        assert seen[-1] == len(BODY)
    finally:
        await packages.stop()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"garbage\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", "bad header line"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "unsupported transfer encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "95 body bytes missing"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed after 27 bytes"),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "HTTP 403"),
        (_ok(b"abc"), "connection closed at 3 of 10 bytes"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n", "response head over"),
    ],
)
async def test_malformed_answers_are_clear_download_errors(raw: bytes, reason: str) -> None:
    async with scripted(answer(raw)) as url:
        with pytest.raises(DownloadError, match=reason):
            await fetch(HttpClient(), Download(url=url, size=10))


async def test_a_body_until_close_is_read_whole() -> None:
    body = b"0123456789"
    async with scripted(answer(b"HTTP/1.1 200 OK\r\n\r\n" + body)) as url:
        job = Download(url=url, size=len(body))
        await fetch(HttpClient(), job)
        assert job.sha256() == hashlib.sha256(body).hexdigest()


async def test_a_silent_server_times_out() -> None:
    async def stall(reader: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async with scripted(stall) as url:
        with pytest.raises(DownloadError, match=r"no response head within 0\.2s"):
            await fetch(HttpClient(read_timeout_s=0.2), Download(url=url, size=10))


async def test_a_refused_connection_is_a_download_error() -> None:
    async with scripted(answer(b"")) as url:
        pass  # closed: nothing listens on the port any more
    with pytest.raises(DownloadError, match=r"connecting to 127\.0\.0\.1"):
        await fetch(HttpClient(), Download(url=url, size=10))


async def test_slots_cap_the_downloads_in_flight() -> None:
    gate, two_in = asyncio.Event(), asyncio.Event()
    peak = [0, 0]

    async def held(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peak[0] += 1
        peak[1] = max(peak)
        if peak[0] == 2:
            two_in.set()
        await gate.wait()
        peak[0] -= 1
        writer.write(_ok(b"x"))

    async with scripted(held) as url:
        http = HttpClient(slots=2)
        jobs = [asyncio.create_task(fetch(http, Download(url=url, size=1))) for _ in range(5)]
        await asyncio.wait_for(two_in.wait(), 5)
        await asyncio.sleep(0.05)  # a third connection, if let through, would arrive now
        assert peak[1] == 2
        gate.set()
        await asyncio.gather(*jobs)
    assert peak[1] == 2
