"""The Range parser: RFC 9110 examples, hostile headers, and properties over any input."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from download_edge.ranges import (
    COALESCE_GAP,
    ByteRange,
    Malformed,
    NotSatisfiable,
    RangeError,
    TooComplex,
    Unsupported,
    content_range,
    if_range_allows,
    parse_general,
    parse_range,
    unsatisfied_range,
)

SIZE = 10_000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-499", [(0, 499)]),
        ("bytes=500-999", [(500, 999)]),
        ("bytes=-500", [(9500, 9999)]),
        ("bytes=9500-", [(9500, 9999)]),
        ("bytes=0-0,-1", [(0, 0), (9999, 9999)]),
        ("bytes=0-99999999", [(0, 9999)]),
        ("bytes=-99999", [(0, 9999)]),
        ("Bytes = 1-2", [(1, 2)]),
        ("bytes= 1-2 ,\t 5000-5001", [(1, 2), (5000, 5001)]),
        ("bytes=,1-2,,", [(1, 2)]),
        ("bytes=0-9,10-19", [(0, 19)]),  # adjacent: one part
        ("bytes=100-199,0-9", [(0, 9), (100, 199)]),  # sorted; gap of 90 > COALESCE_GAP
        ("bytes=0-9,50-59", [(0, 59)]),  # nearly adjacent: coalesced
        ("bytes=0000000000000000000000000000001-2", [(1, 2)]),
        ("bytes=5-" + "9" * 5000, [(5, 9999)]),
        ("bytes=9999-", [(9999, 9999)]),
        ("bytes=0-1,20000-30000", [(0, 1)]),  # unsatisfiable members are dropped
    ],
)
def test_valid_headers(header: str, expected: list[tuple[int, int]]) -> None:
    assert [(r.start, r.end) for r in parse_range(header, SIZE)] == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes",
        "=0-1",
        "bytes=",
        "bytes=,,,",
        "bytes=1",
        "bytes=a-b",
        "bytes=-",
        "bytes=5-4",
        "bytes=0x10-20",
        "bytes=+1-2",
        "bytes=1--2",
        "bytes=1-2-3",
        "bytes=-1-2",
        "bytes=\uff11-\uff12",  # non-ASCII digits are not digits here
        "bytes=1 2-3",
        "bytes=" + "9" * 5000 + "-1",
    ],
)
def test_malformed(header: str) -> None:
    with pytest.raises(Malformed):
        parse_range(header, SIZE)


@pytest.mark.parametrize(
    "header", ["bytes=10000-", "bytes=10000-20000", "bytes=-0", "bytes=99999999999999999999999-"]
)
def test_not_satisfiable(header: str) -> None:
    with pytest.raises(NotSatisfiable):
        parse_range(header, SIZE)


def test_empty_representation_satisfies_nothing() -> None:
    with pytest.raises(NotSatisfiable):
        parse_range("bytes=-5", 0)
    with pytest.raises(NotSatisfiable):
        parse_range("bytes=0-", 0)


def test_other_units_are_unsupported() -> None:
    with pytest.raises(Unsupported):
        parse_range("items=0-5", SIZE)


def test_apache_killer_is_refused_cheaply() -> None:
    # The 2011 attack: hundreds of overlapping ranges over one small file.
    header = "bytes=0-," + ",".join(f"5-{n}" for n in range(5, 1300))
    with pytest.raises(TooComplex):
        parse_range(header, SIZE)


def test_range_count_and_overlap_caps() -> None:
    distinct = ",".join(f"{n * 200}-{n * 200 + 9}" for n in range(17))
    with pytest.raises(TooComplex):
        parse_range("bytes=" + distinct, SIZE)
    assert len(parse_range("bytes=" + distinct, SIZE, max_ranges=17)) == 17
    assert parse_range("bytes=0-100,1-100,2-100", SIZE) == (ByteRange(0, 100),)
    with pytest.raises(TooComplex):
        parse_range("bytes=0-100,1-100,2-100,3-100", SIZE)
    assert parse_range("bytes=0-100,1-100,2-100,3-100", SIZE, max_overlaps=3) != ()


def test_if_range_is_a_strong_comparison() -> None:
    etag = '"' + "ab" * 32 + '"'
    assert if_range_allows(None, etag)
    assert if_range_allows(etag, etag)
    assert if_range_allows(f" {etag} ", etag)
    assert not if_range_allows("W/" + etag, etag)
    assert not if_range_allows('"' + "cd" * 32 + '"', etag)
    assert not if_range_allows("Fri, 27 Nov 2026 01:00:00 GMT", etag)


def test_header_values() -> None:
    assert content_range(ByteRange(0, 9), 100) == "bytes 0-9/100"
    assert unsatisfied_range(100) == "bytes */100"


# ---------------------------------------------------------------- properties

positions = st.integers(min_value=0, max_value=2 * SIZE)
specs = st.one_of(
    st.tuples(positions, positions).map(lambda p: f"{min(p)}-{max(p)}"),
    positions.map(lambda p: f"{p}-"),
    positions.map(lambda p: f"-{p}"),
)


def _reference(items: list[str], size: int) -> set[int]:
    """Every byte the spec list asks for, the slow obvious way."""
    wanted: set[int] = set()
    for item in items:
        first, _, last = item.partition("-")
        if not first:
            wanted.update(range(max(size - int(last), 0), size) if int(last) else ())
        else:
            end = min(int(last) if last else size - 1, size - 1)
            wanted.update(range(int(first), end + 1))
    return wanted


@given(st.lists(specs, min_size=1, max_size=6), st.integers(min_value=0, max_value=SIZE))
@example(["0-0"], 1)
def test_parse_matches_reference(items: list[str], size: int) -> None:
    header = "bytes=" + ",".join(items)
    wanted = _reference(items, size)
    try:
        ranges = parse_range(header, size, max_overlaps=len(items))
    except NotSatisfiable:
        assert not wanted
        return
    covered: set[int] = set()
    for r in ranges:
        assert 0 <= r.start <= r.end < size
        covered.update(range(r.start, r.end + 1))
    # Coalescing may fill small gaps, never drop a wanted byte.
    assert wanted <= covered
    assert len(covered - wanted) <= COALESCE_GAP * (len(items) - 1)
    for earlier, later in itertools.pairwise(ranges):
        assert later.start > earlier.end + 1 + COALESCE_GAP


@given(st.text(max_size=300), st.integers(min_value=0, max_value=2**63))
def test_any_text_raises_only_range_errors(header: str, size: int) -> None:
    try:
        ranges = parse_range(header, size)
    except RangeError:
        return
    assert ranges
    assert all(0 <= r.start <= r.end < size for r in ranges)


@given(
    st.lists(
        st.sampled_from(["bytes", "=", "-", ",", " ", "0", "1", "9", "99999999999999999999", "a"]),
        max_size=60,
    ),
    st.integers(min_value=0, max_value=2**40),
)
def test_fuzz_header_grammar(tokens: list[str], size: int) -> None:
    """A grammar-aware fuzz of the parser (the atheris target in bench/edge covers bytes)."""
    try:
        ranges = parse_range("".join(tokens), size)
    except RangeError:
        return
    assert all(0 <= r.start <= r.end < size for r in ranges)
    assert len(ranges) <= 16


def _outcome(parse: Callable[[str, int], tuple[ByteRange, ...]], header: str, size: int) -> object:
    try:
        return parse(header, size)
    except RangeError as exc:
        return type(exc)


@given(
    st.integers(min_value=0, max_value=10**20),
    st.integers(min_value=0, max_value=10**20),
    st.integers(min_value=0, max_value=2**63),
    st.sampled_from(["bytes={}-{}", "bytes=0{}-{}", "bytes={}-0{}", "bytes={}-{} ", "Bytes={}-{}"]),
)
@example(5, 4, 100, "bytes={}-{}")  # ends before it starts
@example(100, 200, 100, "bytes={}-{}")  # past the end
@example(0, 0, 0, "bytes={}-{}")  # empty representation
@example(10**18 - 1, 10**18, 2**63, "bytes={}-{}")  # the longest positions the shortcut takes
def test_single_range_shortcut_matches_general_parse(
    first: int, last: int, size: int, shape: str
) -> None:
    header = shape.format(first, last)
    assert _outcome(parse_range, header, size) == _outcome(parse_general, header, size)
