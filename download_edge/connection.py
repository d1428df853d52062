"""One client connection: parse HTTP/1.1 with httptools, answer requests in order.

The protocol only decodes, asks `Edge.answer` for a plan, and hands the plan to a body
writer; protocol errors become responses here (400, 408, 413, 431, 505, 503). Requests
are answered one at a time; reading pauses while a response is being written, so a
pipelining client cannot queue unbounded work. Timeouts are checked by the server's
sweeper through `check_timeouts` (one timer for all connections, not one per socket).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import cast

import httptools

from download_edge import metrics as m
from download_edge import ranges, repeats, responses
from download_edge import request as rq
from download_edge.acks import Acks
from download_edge.app import Answer, Edge, Grant, Miss
from download_edge.cache import Package
from download_edge.delivery import Owner
from download_edge.responses import FileSpan, Plan
from download_edge.writers import CopyWriter, SendfileWriter
from ota.clock import now_s

MAX_HEADERS = 64
MAX_BODY_BYTES = 64 * 1024
HEADER_STEP_BYTES = 512  # how a read longer than the header limit is parsed (_feed_in_steps)
_WANTED = {b"authorization": 0, b"range": 1, b"if-range": 2}
# Fields by their usual spelling (-1: not wanted), so most need no lower-casing.
_SPELLED = {
    b"Authorization": 0,
    b"Range": 1,
    b"If-Range": 2,
    b"Host": -1,
    b"User-Agent": -1,
    b"Accept": -1,
    b"Connection": -1,
}

IDLE, READING, BUSY, CLOSING = 0, 1, 2, 3  # CLOSING: answered, waiting for its delivery


class Connection(asyncio.Protocol):
    def __init__(self, edge: Edge, connections: set[Connection]) -> None:
        self._edge = edge
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._socket_fd = -1  # plain TCP: the socket small answers are written to directly
        self._acks = Acks(edge.recorder)
        self._tracking = edge.recorder is not None  # progress recorded per device
        self._ledger = self._acks.ledger
        self._parser = httptools.HttpRequestParser(self)
        self._writer: SendfileWriter | CopyWriter | None = None
        self._queue: deque[rq.Request] = deque()
        self._state = IDLE
        self._since = time.monotonic()
        self._served = 0
        self._pending_bytes = 0
        self._max_header_bytes = edge.settings.max_header_bytes
        self._url = b""
        self._fields: list[str | None] = [None, None, None]
        self._header_count = 0
        self._body_bytes = 0
        self._headers_done = False
        self._waiting_drain: Answer | None = None
        self._fill_task: asyncio.Task[None] | None = None
        self._in_next = False
        self._again = False
        self._reading_paused = False
        self._answer: Answer | None = None
        self._grant: Grant | None = None  # the last request's, for the next one to reuse
        # The last request as a template (`repeats`), and the grant it was answered under.
        self._repeat: tuple[repeats.Template, Grant] | None = None
        self._at_boundary = True  # the parser holds no part of a request
        self._completed = 0  # requests parsed so far
        # The last request parsed: target, Authorization, and Range when without If-Range.
        self._last: tuple[bytes, str | None, str | None] = (b"", None, None)
        self._request_at = 0.0

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if len(self._connections) >= self._edge.settings.max_connections:
            m.connections_refused.inc()
            self._reject(503, "too many connections")
            return
        self._connections.add(self)
        m.connections.inc()
        tls = transport.get_extra_info("sslcontext") is not None
        raw_fd = self._acks.attach(transport, tls=tls)
        if not tls:
            # Pause as soon as anything is buffered: sendfile must find the buffer empty.
            transport.set_write_buffer_limits(high=0)
            self._socket_fd = raw_fd
            self._writer = SendfileWriter(
                self._loop, self._ledger, self._edge.waiter(self._loop), self._socket_fd
            )
        else:
            # uvloop's TLS default (512 KiB) times 10,000 slow downloads would be gigabytes.
            buffer = self._edge.settings.tls_buffer_bytes
            transport.set_write_buffer_limits(high=buffer, low=buffer // 4)
            self._writer = CopyWriter(
                self._loop, self._ledger, transport, self._acks.socket_open, buffer
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._acks.lost(writing=self._writer is not None and self._writer.active)
        if self in self._connections:
            self._connections.discard(self)
            m.connections.dec()
        if self._fill_task is not None:
            self._fill_task.cancel()
        if isinstance(self._writer, SendfileWriter):
            self._writer.close()
        elif self._writer is not None:
            self._writer.abort()
        self._queue.clear()

    def eof_received(self) -> None:
        # The client closed its side (over TLS: its close_notify): it reads no more. uvloop's
        # TLS transport then drops every write without pausing or saying it is closing, so
        # a writer at work would go on "sending" the rest into the void. What the client's
        # TCP acknowledged is known now, while the socket is still open; then stop and close.
        self._acks.confirm()
        if self._writer is not None and self._writer.active:
            self._writer.abort()

    def pause_writing(self) -> None:
        if isinstance(self._writer, CopyWriter):
            self._writer.pause()

    def resume_writing(self) -> None:
        if isinstance(self._writer, CopyWriter):
            self._writer.resume()
        elif self._waiting_drain is not None:
            answer, self._waiting_drain = self._waiting_drain, None
            self._send(answer)

    def data_received(self, data: bytes) -> None:
        if (
            self._writer is None
            or self._state == CLOSING
            or (self._transport is not None and self._transport.is_closing())
        ):
            return  # refused or closing: nothing more is read
        repeat = self._repeat
        if repeat is not None and self._state == IDLE and len(data) <= self._max_header_bytes:
            # A keep-alive HTTP/1.1 GET like the template's request (checked when learnt).
            numbers = repeats.range_of(repeat[0], data)
            if numbers is not None and self._write_small(repeat[1], *numbers):
                return
        self._repeat = None
        at_boundary, completed = self._at_boundary, self._completed
        if self._state == IDLE:
            self._state, self._since = READING, time.monotonic()
        if not self._headers_done and self._pending_bytes + len(data) > self._max_header_bytes:
            self._feed_in_steps(data)
            return
        if not self._headers_done:
            self._pending_bytes += len(data)
        if (
            self._feed(data)
            and at_boundary
            and self._at_boundary
            and self._completed == completed + 1
            and self._state == IDLE
        ):
            self._learn(data)

    def _feed_in_steps(self, data: bytes) -> None:
        """A read longer than the header limit may hold many pipelined requests, each with a
        small header: it is parsed a step at a time so that only the bytes read while a
        request's header is still open count against the limit (a request that completes
        inside a step lets the next one start up to one step under-counted)."""
        for start in range(0, len(data), HEADER_STEP_BYTES):
            piece = data[start : start + HEADER_STEP_BYTES]
            if not self._headers_done:
                self._pending_bytes += len(piece)
                if self._pending_bytes > self._max_header_bytes:
                    self._reject(431, "request header too large")
                    return
            if not self._feed(piece) or (
                self._transport is not None and self._transport.is_closing()
            ):
                return

    def _feed(self, data: bytes) -> bool:
        """Parse; False when the connection ends because of what was read."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is ignored (RFC 9110 7.8): the request is answered as HTTP/1.1, then
            # the connection ends, since the parser stops at an upgrade.
            self.shutdown()
            return False
        except httptools.HttpParserError as exc:
            self._reject(400, f"bad request: {exc}")
            return False
        return True

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._at_boundary = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise httptools.HttpParserError("too many header fields")
        index = _SPELLED.get(name)
        if index is None:
            index = _WANTED.get(name.lower())
        if index is not None and index >= 0:
            self._fields[index] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            raise httptools.HttpParserError("request body too large")

    def on_message_complete(self) -> None:
        url_bytes, self._url = self._url, b""
        fields, self._fields = self._fields, [None, None, None]
        self._pending_bytes = self._header_count = self._body_bytes = 0
        self._headers_done = False
        self._at_boundary = True
        self._completed += 1
        authorization, range_header, if_range = fields
        self._last = (url_bytes, authorization, range_header if if_range is None else None)
        grant = self._grant
        if (
            grant is not None
            and range_header is not None
            and if_range is None
            and url_bytes == grant.path
            and authorization == grant.authorization
            and not grant.query
            and self._state != BUSY
            and not self._queue
            and self._send_small(grant, range_header)
        ):
            return
        parser = self._parser
        version = parser.get_http_version()
        if rq.is_package_path(url_bytes):
            path, query = url_bytes, b""  # what parse_url returns for it, without the object
        else:
            try:
                url = httptools.parse_url(url_bytes)
            except httptools.HttpParserInvalidURLError:
                self._reject(400, "bad request target")
                return
            path, query = url.path or b"", url.query or b""
        if version != "1.1" and version != "1.0":
            self._reject(505, "HTTP/1.0 or HTTP/1.1 only")
            return
        self._queue.append(
            rq.Request(
                parser.get_method().decode("ascii", "replace"),
                path,
                query,
                authorization,
                range_header,
                if_range,
                parser.should_keep_alive(),
            )
        )
        self._next()

    def _learn(self, data: bytes) -> None:
        """Keep a one-read request answered in one step as the template of the next ones:
        only one the small-range path would take again (same target and credentials as
        the grant, a keep-alive HTTP/1.1 GET, a Range and no If-Range)."""
        grant, parser = self._grant, self._parser
        target, authorization, range_header = self._last
        if (
            grant is None
            or range_header is None
            or target != grant.path
            or authorization != grant.authorization
            or grant.query
            or parser.get_method() != b"GET"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
        ):
            return
        template = repeats.learn(data, range_header)
        if template is not None:
            self._repeat = (template, grant)

    # ------------------------------------------------------------ answering

    def _send_small(self, grant: Grant, range_header: str) -> bool:
        """The next small range of the download this connection's last request was part
        of, sent in one step: the same bytes, records and counts as the general path, in a
        fraction of its calls. False (nothing sent) leaves the request to the general path.
        """
        parser = self._parser
        if (
            parser.get_method() != b"GET"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
        ):
            return False
        numbers = ranges.simple_numbers(range_header)
        return numbers is not None and self._write_small(grant, *numbers)

    def _write_small(self, grant: Grant, first: int, last: int) -> bool:
        """`_send_small` for a request known to be a keep-alive HTTP/1.1 GET."""
        transport, writer = self._transport, self._writer
        assert transport is not None
        if transport.is_closing() or (
            writer.paused if isinstance(writer, CopyWriter) else transport.get_write_buffer_size()
        ):
            return False
        started = time.monotonic()
        small = self._edge.small_range(grant, first, last, now_s())
        if small is None:
            return False
        package, head, first, count = small
        data = os.pread(package.fd, count, first)
        if len(data) < count:
            return False  # the general path gives up on a file shorter than it said
        ledger = self._ledger
        if self._socket_fd < 0:
            transport.write(head + data)  # TLS: one write, one record where it fits
        else:
            try:
                sent = os.writev(self._socket_fd, (head, data))
            except OSError:
                return False  # the general path tries again: waits on EAGAIN, else aborts
            if sent < len(head) + count:
                self._send_rest(grant, package, head, first, count, sent, started)
                return True
        # Counted as delivered once the client acknowledged it (the sweeper, or the end).
        ledger.written += len(head)
        ledger.body(self._owner(grant, package.size), first, count)
        now = time.monotonic()
        m.tally.sent_small(first > 0, now - started)
        self._served += 1
        self._state, self._since = IDLE, now
        return True

    def _owner(self, grant: Grant, package_size: int) -> Owner:
        """Whose bytes these are; None when nothing records progress (only counts)."""
        return grant.owner(package_size) if self._tracking else None

    def _send_rest(
        self,
        grant: Grant,
        package: Package,
        head: bytes,
        first: int,
        count: int,
        sent: int,
        started: float,
    ) -> None:
        """The kernel took part of a small answer: the writer sends the rest, as it would."""
        assert self._transport is not None
        self._state, self._request_at = BUSY, started
        head_sent = min(sent, len(head))
        file_sent = sent - head_sent
        self._ledger.head(head_sent)
        if file_sent:
            self._on_first_byte()
            self._ledger.body(self._owner(grant, package.size), first, file_sent)
        rest = FileSpan(first + file_sent, count - file_sent)
        plan = Plan(206, head[head_sent:], (rest,), True, True, first)
        self._send(Answer(plan, package, grant.device_id, grant), first_byte_sent=file_sent > 0)
        if self._state == BUSY and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def _next(self) -> None:
        """Answer queued requests in order; iterative, since sends may finish at once."""
        if self._in_next:
            self._again = True
            return
        self._in_next = True
        try:
            self._again = True
            while self._again:
                self._again = False
                if self._state == BUSY or self._transport is None:
                    return
                if not self._queue:
                    self._state, self._since = IDLE, time.monotonic()
                    if self._reading_paused and not self._transport.is_closing():
                        self._reading_paused = False
                        self._transport.resume_reading()
                    return
                self._start(self._queue.popleft())
        finally:
            self._in_next = False

    def _start(self, req: rq.Request) -> None:
        assert self._transport is not None
        self._state, self._since = BUSY, time.monotonic()
        self._request_at = self._since
        result = self._edge.answer(req, now_s(), self._grant)
        if isinstance(result, Miss):
            self._fill_task = self._loop.create_task(self._fill(req, result.package_sha256))
        else:
            self._send(result)
        if self._state == BUSY and not self._transport.is_closing():
            # Still writing (or filling): hold further requests in the kernel meanwhile.
            self._reading_paused = True
            self._transport.pause_reading()

    async def _fill(self, req: rq.Request, package_sha256: str) -> None:
        failure = await self._edge.fill(package_sha256, req.keep_alive, now_s())
        self._fill_task = None
        if failure is not None:
            self._send(Answer(failure))
            return
        result = self._edge.answer(req, now_s())
        self._send(
            result
            if isinstance(result, Answer)
            else Answer(
                responses.error(502, "package unavailable", keep_alive=False, now_s=now_s())
            )
        )

    def _send(self, answer: Answer, *, first_byte_sent: bool = False) -> None:
        transport, writer = self._transport, self._writer
        assert transport is not None
        assert writer is not None
        if transport.is_closing():
            return
        plan = answer.plan
        self._answer = answer
        if answer.grant is not None:
            self._grant = answer.grant
        if answer.package is None or not plan.has_file:
            data = plan.head + b"".join(p for p in plan.body if isinstance(p, bytes))
            transport.write(data)
            self._ledger.head(len(data))
            self._done(True)
            return
        if isinstance(writer, SendfileWriter) and transport.get_write_buffer_size():
            self._waiting_drain = answer
            return
        if plan.status == 206 and plan.first_offset > 0:
            m.tally.resumed += 1
        bucket = None
        limiter = self._edge.limiter
        if limiter is not None and answer.device_id is not None:
            bucket = limiter.bucket(answer.device_id, time.monotonic())
        package = answer.package
        owner: Owner = None
        if answer.device_id is not None and self._edge.recorder is not None:
            owner = (answer.device_id, package.sha256, package.size)
        writer.start(
            (plan.head, *plan.body),
            package,
            owner,
            bucket,
            self._acks.confirm,
            self._on_first_byte,
            self._done,
            first_byte_sent=first_byte_sent,
        )

    def _on_first_byte(self) -> None:
        now = time.monotonic()
        m.tally.first_byte(now - self._request_at)
        self._since = now

    def _done(self, ok: bool) -> None:
        answer, self._answer = self._answer, None
        transport = self._transport
        assert answer is not None
        assert transport is not None
        m.tally.status(answer.plan.status)
        self._served += 1
        if not ok:
            self.abort()
            return
        if not answer.plan.keep_alive:
            self._close_when_delivered()
            return
        self._state = IDLE
        self._next()

    def _close_when_delivered(self) -> None:
        """Close after the last answer, once the client acknowledged it: closing at once
        would leave unknown what it got. A plain socket sends its FIN now (the client
        sees the end); the sweeper or the client's own close ends the wait."""
        transport = self._transport
        assert transport is not None
        self._acks.confirm()
        if not self._ledger.pending or transport.is_closing():
            transport.close()
            return
        self._state, self._since = CLOSING, time.monotonic()
        self._queue.clear()
        if transport.can_write_eof():
            transport.write_eof()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _reject(self, status: int, reason: str) -> None:
        """Answer a request we will not parse further, then close."""
        transport = self._transport
        assert transport is not None
        if self._state != BUSY and not transport.is_closing():
            m.tally.status(status)
            plan = responses.error(status, reason, keep_alive=False, now_s=now_s())
            data = plan.head + b"".join(p for p in plan.body if isinstance(p, bytes))
            transport.write(data)
            self._ledger.head(len(data))
        self._acks.confirm()
        transport.close()

    # ------------------------------------------------------------ timeouts

    def check_timeouts(self, now: float) -> None:
        """Close the connection if it waited too long in its current state."""
        settings = self._edge.settings
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._acks.confirm()
        waited = now - self._since
        if self._state == CLOSING:
            if not self._ledger.pending or waited > settings.idle_timeout_s:
                transport.close()
        elif self._state == IDLE:
            limit = settings.idle_timeout_s if self._served else settings.header_timeout_s
            if waited > limit:
                m.timeouts.labels("idle").inc()
                transport.close()
        elif self._state == READING:
            if waited > settings.header_timeout_s:
                m.timeouts.labels("header").inc()
                self._reject(408, "request header timeout")
        elif (
            self._writer is not None
            and self._writer.active
            and now - self._writer.progress_at > settings.idle_timeout_s
        ):
            m.timeouts.labels("send").inc()
            self.abort()

    def shutdown(self) -> None:
        """Stop intake: close now if idle, else after the response in progress."""
        transport = self._transport
        if transport is None:
            return
        if self._state != BUSY:
            self._acks.confirm()
            transport.close()
        else:
            self._queue.clear()
            if self._answer is not None:
                self._answer.plan = responses.Plan(
                    self._answer.plan.status, self._answer.plan.head, (), keep_alive=False
                )

    def abort(self) -> None:
        """Drop the connection now; the writer lets go of the socket first."""
        self._acks.confirm()
        if isinstance(self._writer, SendfileWriter):
            self._writer.close()
        if self._transport is not None:
            self._transport.abort()
