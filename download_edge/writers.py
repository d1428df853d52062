"""Body writers: how a plan's bytes leave the process.

`SendfileWriter` (plain TCP) bypasses the transport: the head goes out with
`send(MSG_MORE)` so the kernel holds it for the body (what TCP_CORK/nginx's tcp_nopush
achieve, without two extra system calls per response) and the file spans go with
`os.sendfile`, zero-copy. On EAGAIN it waits through the process's `WritableWaiter`.
The caller makes sure the transport's own buffer is empty before a writer starts, and
keeps reading paused while it runs.

`CopyWriter` (TLS, where the kernel offers no TLS offload) reads the file in chunks with
`os.pread` into the SSL transport and stops while the transport says its buffer is full.

Both enter every byte they hand over in the connection's `delivery.Ledger` (heads as
stream bytes, file spans with their owner), call `on_written()` after a round of writes
(at most once per `CONFIRM_BYTES`, and at the end) so the connection can confirm what left
the buffers, report the first body byte through
`on_first_byte()`, and the end through `on_done(ok)`: all of the plan written, not yet
delivered (the ledger knows when it is).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import socket
import struct
import termios
import time
from collections.abc import Callable

from download_edge.cache import Package
from download_edge.delivery import Ledger, Owner
from download_edge.ratelimit import Bucket
from download_edge.responses import Body, FileSpan

SENDFILE_MAX = 1 << 30
TCP_CHECK_BYTES = 1 << 20  # TLS: bytes written in one round between looks at the socket
CONFIRM_BYTES = 1 << 20  # bytes written between the confirmations a writer asks for
# Bodies up to this size are copied (pread + one writev with the head): one packet, no
# socket wrapper, as cheap as sendfile for a few pages.
SMALL_BODY = 16 * 1024

OnDone = Callable[[bool], None]
_INT = struct.Struct("i")
_ZERO = bytes(_INT.size)


_TCP_CLOSE = 7  # Linux's TCP_CLOSE: reset (or never connected); every other state still
# counts its send queue, our own FIN sent (FIN_WAIT, LAST_ACK, ...) or the peer's received.


def tcp_open(fd: int) -> bool:
    """Whether a TCP socket was not reset: what it holds is still on its way. After a
    reset uvloop's transports drop writes without a word until connection_lost (over TLS,
    is_closing() stays False meanwhile), so bytes written then reached nobody."""
    borrowed = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
    try:
        return borrowed.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_CLOSE
    finally:
        borrowed.detach()


def unacknowledged(fd: int) -> int:
    """Bytes of a TCP socket's send queue its peer has not acknowledged (SIOCOUTQ, which
    Linux spells like the terminal ioctl TIOCOUTQ)."""
    found: int = _INT.unpack(fcntl.ioctl(fd, termios.TIOCOUTQ, _ZERO))[0]
    return found


class _Writer:
    """Shared bookkeeping: the parts, where we are in them, and the callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ledger: Ledger) -> None:
        self._loop = loop
        self._ledger = ledger
        self._owner: Owner = None
        self._parts: Body = ()
        self._index = 0
        self._pos = 0
        self._package: Package | None = None
        self._bucket: Bucket | None = None
        self._on_written: Callable[[], None] = _ignore
        self._on_first: Callable[[], None] = _ignore
        self._on_done: OnDone = _ignore_done
        self._first_pending = False
        self._confirmed_at = 0  # the ledger's stream position at the last on_written
        self._timer: asyncio.TimerHandle | None = None
        self.active = False
        self.progress_at = 0.0  # monotonic time of the last byte accepted

    def start(
        self,
        parts: Body,
        package: Package | None,
        owner: Owner,
        bucket: Bucket | None,
        on_written: Callable[[], None],
        on_first_byte: Callable[[], None],
        on_done: OnDone,
        *,
        first_byte_sent: bool = False,
    ) -> None:
        """Send `parts`; `first_byte_sent`: the caller already sent (and reported) body bytes."""
        self._parts, self._index, self._pos = parts, 0, 0
        self._package, self._owner, self._bucket = package, owner, bucket
        self._on_written, self._on_first, self._on_done = on_written, on_first_byte, on_done
        self._first_pending = not first_byte_sent
        self.active = True
        self.progress_at = time.monotonic()
        if package is not None:
            package.acquire()
        self._pump()

    def abort(self) -> None:
        """The connection is gone: stop (what was written is in the ledger)."""
        if self.active:
            self._finish(False)

    def _pump(self) -> None:
        raise NotImplementedError

    def _small_response(self) -> tuple[bytes, FileSpan] | None:
        """(head, span) when the plan is a head and one span small enough to copy at once."""
        parts = self._parts
        if self._index or self._pos or len(parts) != 2 or self._bucket is not None:
            return None
        head, span = parts
        if isinstance(head, bytes) and isinstance(span, FileSpan) and span.count <= SMALL_BODY:
            return head, span
        return None

    def _grant(self, wanted: int) -> int:
        """Bytes the device's rate limit allows now; 0 schedules a later pump."""
        if self._bucket is None:
            return wanted
        granted = self._bucket.take(wanted, time.monotonic())
        if not granted:
            self._timer = self._loop.call_later(self._bucket.wait_s(), self._pump)
        return granted

    def _advance(self, part: bytes | FileSpan, sent: int) -> None:
        if isinstance(part, FileSpan):
            if self._first_pending and sent:
                self._first_pending = False
                self._on_first()
            self._ledger.body(self._owner, part.offset + self._pos, sent)
            size = part.count
        else:
            self._ledger.head(sent)
            size = len(part)
        self._pos += sent
        if self._pos >= size:
            self._index += 1
            self._pos = 0

    def _written_some(self) -> None:
        """A round of writes ended: let the connection confirm, once per CONFIRM_BYTES
        (each look costs system calls; the sweeper and the end catch the rest)."""
        if self._ledger.written - self._confirmed_at >= CONFIRM_BYTES:
            self._confirmed_at = self._ledger.written
            self._on_written()

    def _finish(self, ok: bool) -> None:
        self.active = False
        self._on_written()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._package is not None:
            self._package.release()
            self._package = None
        self._parts = ()
        self._on_done(ok)


class WritableWaiter:
    """Wakes writers when their sockets can take more data: one epoll for the process.

    uvloop refuses `add_writer` on a descriptor its transport owns, so instead of one
    duplicated descriptor per connection (which would double the descriptors that 10,000
    slow downloads hold), one extra epoll set registered with the loop as a reader watches
    every socket waiting to write (one-shot, re-armed on the next EAGAIN).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._owners: dict[int, object] = {}  # registered descriptor -> its writer
        self._callbacks: dict[int, Callable[[], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def close(self) -> None:
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def wait(self, fd: int, owner: object, callback: Callable[[], None]) -> None:
        events = select.EPOLLOUT | select.EPOLLONESHOT
        if self._owners.get(fd) is owner:
            try:
                self._epoll.modify(fd, events)
            except FileNotFoundError:
                self._epoll.register(fd, events)
        else:
            # A closed socket leaves epoll by itself; its number may be reused since.
            try:
                self._epoll.register(fd, events)
            except FileExistsError:
                self._epoll.modify(fd, events)
            self._owners[fd] = owner
        self._callbacks[fd] = callback

    def forget(self, fd: int, owner: object) -> None:
        """Stop watching `fd` for `owner`; call before its socket is closed."""
        if self._owners.get(fd) is not owner:
            return
        del self._owners[fd]
        self._callbacks.pop(fd, None)
        with contextlib.suppress(OSError):  # already gone with its socket
            self._epoll.unregister(fd)

    def _ready(self) -> None:
        for fd, _ in self._epoll.poll(0):
            callback = self._callbacks.pop(fd, None)
            if callback is not None:
                callback()


class SendfileWriter(_Writer):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ledger: Ledger,
        waiter: WritableWaiter,
        socket_fd: int,
    ) -> None:
        super().__init__(loop, ledger)
        self._waiter = waiter
        self._fd = socket_fd

    def close(self) -> None:
        self.abort()
        self._waiter.forget(self._fd, self)

    def _send_bytes(self, data: memoryview, more: bool) -> int:
        # uvloop's transport socket has no send(); a detached wrapper borrows the descriptor
        # (family and type given, so no system call probes them) to pass MSG_MORE.
        borrowed = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, self._fd)
        try:
            return borrowed.send(data, socket.MSG_MORE if more else 0)
        finally:
            borrowed.detach()

    def _send_small(self, head: bytes, span: FileSpan) -> bool | None:
        """Head and a small span in one `writev`, read with one `pread`.

        True: all sent. False: the kernel took part; the parts now hold the rest.
        None: the file is shorter than it said.
        """
        assert self._package is not None
        data = os.pread(self._package.fd, span.count, span.offset)
        if len(data) < span.count:
            return None
        sent = os.writev(self._fd, (head, data))
        if sent == len(head) + span.count:
            self._advance(head, len(head))
            self._advance(span, span.count)
            return True
        head_sent = min(sent, len(head))
        self._advance(head, head_sent)
        if head_sent == len(head):
            self._advance(span, sent - head_sent)
        return False

    def _pump(self) -> None:
        self._timer = None
        parts = self._parts
        try:
            small = self._small_response()
            if small is not None:
                done = self._send_small(*small)
                if done is not False:
                    self._finish(bool(done))
                    return
            parts = self._parts
            while self._index < len(parts):
                part = parts[self._index]
                if isinstance(part, bytes):
                    more = self._index + 1 < len(parts)
                    sent = self._send_bytes(memoryview(part)[self._pos :], more)
                else:
                    assert self._package is not None
                    wanted = self._grant(min(part.count - self._pos, SENDFILE_MAX))
                    if not wanted:
                        self._written_some()
                        return
                    offset = part.offset + self._pos
                    sent = os.sendfile(self._fd, self._package.fd, offset, wanted)
                    if self._bucket is not None:
                        self._bucket.refund(wanted - sent)
                    if sent == 0:  # the file is shorter than it said: never pad
                        self._finish(False)
                        return
                self._advance(part, sent)
                self.progress_at = time.monotonic()
        except BlockingIOError:
            self._waiter.wait(self._fd, self, self._pump)
            self._written_some()
            return
        except OSError:  # reset, broken pipe: the client went away
            self._finish(False)
            return
        self._finish(True)

    def _finish(self, ok: bool) -> None:
        if not ok:
            self._waiter.forget(self._fd, self)
        super()._finish(ok)


class CopyWriter(_Writer):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ledger: Ledger,
        transport: asyncio.WriteTransport,
        socket_open: Callable[[], bool],
        chunk: int,
    ) -> None:
        super().__init__(loop, ledger)
        self._transport = transport
        self._socket_open = socket_open  # whether the socket under the TLS layer takes data
        self._chunk = chunk
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        if self.active and self._timer is None:
            self._pump()

    def _pump(self) -> None:
        self._timer = None
        parts = self._parts
        small = self._small_response()
        if small is not None and not self._paused:
            # One TLS write for head and body: one record where the client allows it.
            head, span = small
            assert self._package is not None
            data = os.pread(self._package.fd, span.count, span.offset)
            if len(data) < span.count:
                self._finish(False)
                return
            self._transport.write(head + data)
            self._advance(head, len(head))
            self._advance(span, span.count)
            self._finish(True)
            return
        unchecked = 0
        while self._index < len(parts):
            if self._paused or self._transport.is_closing():
                self._written_some()
                return
            part = parts[self._index]
            if isinstance(part, bytes):
                self._transport.write(part)
                self._advance(part, len(part))
                continue
            assert self._package is not None
            wanted = self._grant(min(part.count - self._pos, self._chunk))
            if not wanted:
                self._written_some()
                return
            data = os.pread(self._package.fd, wanted, part.offset + self._pos)
            if self._bucket is not None:
                self._bucket.refund(wanted - len(data))
            if not data:
                self._finish(False)
                return
            self._transport.write(data)
            self._advance(part, len(data))
            self.progress_at = time.monotonic()
            unchecked += len(data)
            # A reset (or a FIN uvloop took as the end) lets writes vanish with no pause, so
            # a round that goes on looks at the socket every TCP_CHECK_BYTES: the rest
            # would go nowhere.
            if unchecked >= TCP_CHECK_BYTES:
                unchecked = 0
                if not self._socket_open():
                    self._finish(False)
                    return
        self._finish(True)


def _ignore() -> None:
    return None


def _ignore_done(ok: bool) -> None:
    return None
