"""Which body bytes of a connection have reached the client: pure, no I/O.

A write only hands bytes to a buffer: uvloop's TLS layer, the socket transport under it,
the kernel's send queue. A client that disconnects mid-response never gets what was still
there, so the edge counts a body byte as delivered only once everything written before
it has left those buffers and the client's TCP acknowledged it. The connection asks the
buffers how many bytes they still hold (`unflushed`: the transport's buffer plus the
kernel's unacknowledged bytes, SIOCOUTQ) and the `Ledger` turns that into file spans.

The ledger sees the connection's output as one stream: heads and bodies in the order
written. Body bytes of one package that follow each other in the file are kept as one
span even when a head was written between them (a device fetching range after range), so
a busy connection holds a few spans, not one per request. Such a span is confirmed
conservatively: a partly flushed span counts only the bytes that must be flushed even
if every head inside it came first. Over TLS `unflushed` counts ciphertext, which is
never smaller than the plaintext it carries, so the error is again on the safe side.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Over TLS, what the edge cannot see and may count too early: uvloop's socket transport
# under the TLS layer buffers ciphertext (up to its 64 KiB high-water mark, plus the TLS
# layer's last flush of at most `tls_buffer_bytes`) and offers no call that tells how much.
TLS_UNSEEN_BYTES = 64 * 1024 + 1024

# Whose bytes a span holds: (device id, package sha256, package size), or None to count
# the bytes without recording them for anybody (no progress tracking): then consecutive
# spans join whatever their offsets, and only their byte counts mean anything.
Owner = tuple[str, str, int] | None


@dataclass(slots=True)
class Span:
    """Body bytes `[offset, offset + count)` of the owner's package, written as part of
    stream bytes `[start, end)` (end - start - count head bytes are interleaved)."""

    owner: Owner
    start: int
    end: int
    offset: int
    count: int


Delivered = tuple[Owner, int, int]  # owner, offset, count


class Ledger:
    """The stream position written so far and the body spans not yet confirmed."""

    __slots__ = ("_spans", "written")

    def __init__(self) -> None:
        self.written = 0
        self._spans: deque[Span] = deque()

    @property
    def pending(self) -> bool:
        return bool(self._spans)

    def head(self, count: int) -> None:
        """`count` bytes that are not package content (heads, error bodies) were written."""
        self.written += count

    def body(self, owner: Owner, offset: int, count: int) -> None:
        """Package bytes `[offset, offset + count)` were written after everything before."""
        if count <= 0:
            return
        start = self.written
        self.written = end = start + count
        spans = self._spans
        if spans:
            last = spans[-1]
            if last.owner == owner and (owner is None or last.offset + last.count == offset):
                last.end, last.count = end, last.count + count
                return
        spans.append(Span(owner, start, end, offset, count))

    def confirm(self, unflushed: int) -> list[Delivered]:
        """The spans delivered now that only the last `unflushed` bytes written are still
        buffered; they leave the ledger."""
        reached = self.written - max(0, unflushed)
        spans = self._spans
        out: list[Delivered] = []
        while spans and spans[0].start < reached:
            span = spans[0]
            if span.end <= reached:
                out.append((span.owner, span.offset, span.count))
                spans.popleft()
                continue
            # Partly flushed: the file bytes that are out even if all heads came first.
            done = max(0, span.count - (span.end - reached))
            if done:
                out.append((span.owner, span.offset, done))
            span.start, span.offset, span.count = reached, span.offset + done, span.count - done
            break
        return out

    def rest(self) -> list[Delivered]:
        """Every span still unconfirmed (the connection is gone); the ledger is emptied."""
        out = [(span.owner, span.offset, span.count) for span in self._spans]
        self._spans.clear()
        return out
