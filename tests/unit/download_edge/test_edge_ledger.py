"""The delivery ledger: body bytes count as delivered only once everything written before
them has left the buffers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from download_edge.delivery import Ledger

A = ("dev-a", "aa" * 32, 1 << 20)
B = ("dev-b", "bb" * 32, 1 << 20)

# A write: ("head", n) or ("body", owner index, n); a check: ("confirm", unflushed).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("head"), st.integers(1, 300)),
        st.tuples(st.just("body"), st.integers(0, 1), st.integers(0, 5000)),
        st.tuples(st.just("confirm"), st.integers(0, 20000)),
    ),
    max_size=40,
)


@given(steps)
def test_confirmed_bytes_were_flushed_and_nothing_is_lost_or_counted_twice(
    script: list[tuple[object, ...]],
) -> None:
    ledger = Ledger()
    owners = (A, B)
    stream: list[tuple[object, int] | None] = []  # per stream byte: (owner, file offset)
    next_offset = [0, 0]
    seen: set[tuple[object, int]] = set()
    for step in script:
        if step[0] == "head":
            count = int(step[1])  # type: ignore[call-overload]
            ledger.head(count)
            stream += [None] * count
        elif step[0] == "body":
            which, count = int(step[1]), int(step[2])  # type: ignore[call-overload]
            ledger.body(owners[which], next_offset[which], count)
            stream += [(owners[which], next_offset[which] + i) for i in range(count)]
            next_offset[which] += count
        else:
            unflushed = int(step[1])  # type: ignore[call-overload]
            reached = max(0, len(stream) - unflushed)
            flushed = {byte for byte in stream[:reached] if byte is not None}
            for owner, offset, count in ledger.confirm(unflushed):
                for i in range(count):
                    assert (owner, offset + i) in flushed  # never more than what left
                    assert (owner, offset + i) not in seen  # never twice
                    seen.add((owner, offset + i))
    assert ledger.written == len(stream)
    rest = ledger.rest()
    for owner, offset, count in rest:
        for i in range(count):
            assert (owner, offset + i) not in seen
            seen.add((owner, offset + i))
    assert seen == {byte for byte in stream if byte is not None}
    assert not ledger.pending


def test_everything_counts_once_the_buffers_are_empty() -> None:
    ledger = Ledger()
    for start in range(0, 16384, 4096):  # range after range: one span, heads between
        ledger.head(200)
        ledger.body(A, start, 4096)
    assert ledger.confirm(0) == [(A, 0, 16384)]
    assert not ledger.pending


def test_a_partly_flushed_span_counts_what_is_out_even_if_heads_came_first() -> None:
    ledger = Ledger()
    ledger.head(100)
    ledger.body(A, 0, 1000)
    ledger.head(100)
    ledger.body(A, 1000, 1000)  # stream 0..2200, file bytes 0..2000 in one span
    assert ledger.confirm(1000) == [(A, 0, 1000)]  # 1200 out, at worst 200 of them heads
    assert ledger.confirm(0) == [(A, 1000, 1000)]


def test_bytes_nobody_records_are_only_counted() -> None:
    ledger = Ledger()
    for start in (8192, 0, 40960):  # random ranges, progress tracking off: one span
        ledger.head(200)
        ledger.body(None, start, 4096)
    assert [count for _, _, count in ledger.confirm(0)] == [3 * 4096]
