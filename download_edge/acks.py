"""What a connection's client acknowledged: its delivery ledger and the socket it asks.

`delivery.Ledger` is the pure bookkeeping; this is its I/O shell. `confirm` reads how
much written data is still unacknowledged (the transport's buffer plus the kernel's send
queue, SIOCOUTQ) and records the spans that are out: `ProgressRecorder` notes and the
`ota_edge_bytes_sent_total` count. `lost` records what never got confirmed as
unconfirmed (`ota_edge_bytes_unconfirmed_total`), for a resuming device to vouch for.

Over TLS the socket is a duplicate kept until connection_lost: uvloop's TLS transport
closes the socket on a plain FIN without calling eof_received, so otherwise the last
answer's tail could never be confirmed.
"""

from __future__ import annotations

import asyncio
import os

from download_edge import metrics as m
from download_edge.delivery import Delivered, Ledger
from download_edge.progress import ProgressRecorder
from download_edge.writers import tcp_open, unacknowledged


class Acks:
    __slots__ = (
        "_broken",
        "_fd",
        "_inode",
        "_own_fd",
        "_recorder",
        "_shared_fd",
        "_transport",
        "ledger",
    )

    def __init__(self, recorder: ProgressRecorder | None) -> None:
        self.ledger = Ledger()
        self._recorder = recorder
        self._transport: asyncio.Transport | None = None
        self._fd = -1  # the TCP socket under the transport
        self._own_fd = False
        self._shared_fd = -1  # TLS: the transport's descriptor, and its socket's inode
        self._inode = 0
        self._broken = False  # seen not taking data: the ledger's end may hold dropped writes

    def attach(self, transport: asyncio.Transport, *, tls: bool) -> int:
        """Watch `transport`'s socket; its descriptor (over TLS, our duplicate)."""
        self._transport = transport
        self._fd = transport.get_extra_info("socket").fileno()
        if tls:
            self._shared_fd, self._inode = self._fd, os.fstat(self._fd).st_ino
            self._fd, self._own_fd = os.dup(self._fd), True
        return self._fd

    def socket_open(self) -> bool:
        """Whether what was written reached the socket. Over TLS, after a reset or a FIN
        (uvloop then closes its descriptor first and tells the protocol later), uvloop's
        transports drop writes without a word until connection_lost. A plain connection's
        bodies go out by the edge's own system calls, which fail instead: its socket's
        count holds, even once closed gracefully (a socket that got the peer's FIN after
        sending its own is in TCP_CLOSE, like a reset one)."""
        if self._fd < 0 or self._broken:
            return False
        if not self._own_fd:
            return True
        try:
            # Closed by the transport (or the number reused since), or reset?
            shared = os.fstat(self._shared_fd).st_ino == self._inode
            self._broken = not (shared and tcp_open(self._fd))
        except OSError:
            self._broken = True
        return not self._broken

    def confirm(self, *, final: bool = False) -> None:
        """Record the body bytes the client has now got. Only while the socket is open
        (`final`: our duplicate of it): after a close its number may name another socket."""
        transport = self._transport
        if (
            not self.ledger.pending
            or self._fd < 0
            or transport is None
            or (transport.is_closing() and not final)
        ):
            return
        try:
            # Finally (TLS) the transport has closed its descriptor; ours must not be reset.
            if not (tcp_open(self._fd) and not self._broken if final else self.socket_open()):
                return  # what was written lately may have been dropped
            unacked = unacknowledged(self._fd)
        except OSError:
            return
        # The transport's buffer (over TLS, uvloop's TLS layer) and the kernel's queue.
        unflushed = transport.get_write_buffer_size() + unacked
        self._record(self.ledger.confirm(unflushed), delivered=True)

    def lost(self, *, writing: bool) -> None:
        """The connection is gone. A last look through our duplicate unless an answer was
        being written (the transport may have dropped its last writes); what is still
        unconfirmed is recorded so."""
        if self._own_fd:
            if not writing:
                self.confirm(final=True)
            os.close(self._fd)
        self._fd = -1  # closed by now; its number may already belong to another socket
        if self.ledger.pending:
            self._record(self.ledger.rest(), delivered=False)

    def _record(self, spans: list[Delivered], *, delivered: bool) -> None:
        if self._recorder is not None:
            self._recorder.note_spans(spans, delivered=delivered)
        total = sum(count for _, _, count in spans)
        if delivered:
            m.tally.bytes_sent += total
        else:
            m.tally.bytes_unconfirmed += total
