"""Byte-range requests (RFC 9110 section 14): a pure parser and the If-Range check.

Nothing here does I/O. `parse_range` turns a `Range` header value and the
representation's size into the byte ranges to send, coalesced and sorted, or raises
one of the errors below; the HTTP layer alone maps them to responses:

    RangeError
    +-- Malformed       the header is not a valid `bytes=` range set   -> 400
    +-- Unsupported     another range unit; RFC 9110 says ignore it    -> 200, whole file
    +-- TooComplex      too many ranges or overlaps (denial of service) -> 200, whole file
    +-- NotSatisfiable  no range overlaps the representation          -> 416

Hostile input costs little: the header length is bounded by the server's header
limit, the parser stops at `max_ranges` + 1 ranges, and numbers are compared by
their digit count before `int()` so a thousand-digit position is never converted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Positions with more significant digits than this are beyond any file we could hold
# (10**19 > 2**63); treating them as "huge" keeps int() off attacker-sized strings.
MAX_DIGITS = 19
HUGE = 10_000_000_000_000_000_000  # 10**MAX_DIGITS
DEFAULT_MAX_RANGES = 16
DEFAULT_MAX_OVERLAPS = 2
# Ranges separated by fewer bytes than a multipart part header are sent as one.
COALESCE_GAP = 80
_DIGITS = frozenset("0123456789")
_OWS = " \t"
# What resuming devices send, `bytes=<first>-<last>`, with positions short enough that
# int() is always safe (fewer digits than MAX_DIGITS): answered without the general parse.
_SIMPLE = re.compile(r"bytes=([0-9]{1,18})-([0-9]{1,18})")


class RangeError(ValueError):
    """A Range header that cannot be honoured as asked."""


class Malformed(RangeError):  # noqa: N818 - the names HTTP code reads best
    """Not a syntactically valid byte-range set."""


class Unsupported(RangeError):  # noqa: N818 - the names HTTP code reads best
    """A range unit other than `bytes`."""


class TooComplex(RangeError):  # noqa: N818 - the names HTTP code reads best
    """Too many ranges, or too many of them overlapping: served as the whole file."""


class NotSatisfiable(RangeError):  # noqa: N818 - the names HTTP code reads best
    """Valid, but every range starts beyond the end of the representation."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` to `end` inclusive, both within the representation."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _number(text: str) -> int:
    """A non-negative decimal; positions too long to matter come back as HUGE."""
    if not text or not _DIGITS.issuperset(text):
        raise Malformed(f"{text[:32]!r} is not a byte position")
    significant = text.lstrip("0")
    if len(significant) > MAX_DIGITS:
        return HUGE
    return int(significant) if significant else 0


def _spec(item: str, size: int) -> ByteRange | None:
    """One range-spec resolved against `size`; None when it lies wholly past the end."""
    first_text, dash, last_text = item.partition("-")
    if not dash:
        raise Malformed(f"range {item[:32]!r} has no '-'")
    first_text, last_text = first_text.strip(_OWS), last_text.strip(_OWS)
    if not first_text:  # suffix-range: the last N bytes
        suffix = _number(last_text)
        if suffix == 0 or size == 0:
            return None
        return ByteRange(max(size - suffix, 0), size - 1)
    first = _number(first_text)
    last = _number(last_text) if last_text else HUGE
    if last < first:
        raise Malformed(f"range {item[:32]!r} ends before it starts")
    if first >= size:
        return None
    return ByteRange(first, min(last, size - 1))


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    ranges.sort(key=lambda r: r.start)
    merged = [ranges[0]]
    for current in ranges[1:]:
        last = merged[-1]
        if current.start <= last.end + 1 + COALESCE_GAP:
            if current.end > last.end:
                merged[-1] = ByteRange(last.start, current.end)
        else:
            merged.append(current)
    return tuple(merged)


def _count_overlaps(ranges: list[ByteRange]) -> int:
    ordered = sorted(ranges, key=lambda r: r.start)
    overlaps, reach = 0, -1
    for current in ordered:
        if current.start <= reach:
            overlaps += 1
        reach = max(reach, current.end)
    return overlaps


def parse_range(
    header: str,
    size: int,
    *,
    max_ranges: int = DEFAULT_MAX_RANGES,
    max_overlaps: int = DEFAULT_MAX_OVERLAPS,
) -> tuple[ByteRange, ...]:
    """The ranges of `header` to send for a representation of `size` bytes.

    Returns at least one range, sorted and coalesced (overlapping, adjacent and
    nearly adjacent ranges merged), each clamped to the representation.
    """
    single = single_range(header, size)
    if single is not None:
        return (ByteRange(*single),)
    return parse_general(header, size, max_ranges=max_ranges, max_overlaps=max_overlaps)


def single_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) for a plain `bytes=<first>-<last>` that overlaps the representation,
    clamped as `parse_range` would; None for any other header (`parse_range` decides it)."""
    numbers = simple_numbers(header)
    return None if numbers is None else clamp(*numbers, size)


def simple_numbers(header: str) -> tuple[int, int] | None:
    """The two numbers of a plain `bytes=<first>-<last>` (at most 18 digits each)."""
    simple = _SIMPLE.fullmatch(header)
    if simple is None:
        return None
    first, last = simple.groups()
    return int(first), int(last)


def clamp(first: int, last: int, size: int) -> tuple[int, int] | None:
    """`single_range` of `bytes=<first>-<last>` for a representation of `size` bytes."""
    if first <= last and first < size:
        return first, (last if last < size else size - 1)
    return None


def parse_general(
    header: str,
    size: int,
    *,
    max_ranges: int = DEFAULT_MAX_RANGES,
    max_overlaps: int = DEFAULT_MAX_OVERLAPS,
) -> tuple[ByteRange, ...]:
    """`parse_range` without its shortcut for one plain range (tests compare the two)."""
    unit, eq, spec_text = header.partition("=")
    unit = unit.strip(_OWS)
    if not eq or not unit:
        raise Malformed("Range is not <unit>=<ranges>")
    if unit.lower() != "bytes":
        raise Unsupported(f"range unit {unit[:32]!r} is not supported")
    if "," not in spec_text:  # the common case: one range, nothing to merge or count
        item = spec_text.strip(_OWS)
        if not item:
            raise Malformed("Range names no ranges")
        single = _spec(item, size)
        if single is None:
            raise NotSatisfiable(f"no range overlaps the {size} bytes")
        return (single,)
    wanted: list[ByteRange] = []
    seen = 0
    for raw in spec_text.split(","):
        item = raw.strip(_OWS)
        if not item:  # the list rule allows empty elements
            continue
        seen += 1
        if seen > max_ranges:
            raise TooComplex(f"more than {max_ranges} ranges")
        resolved = _spec(item, size)
        if resolved is not None:
            wanted.append(resolved)
    if seen == 0:
        raise Malformed("Range names no ranges")
    if not wanted:
        raise NotSatisfiable(f"no range overlaps the {size} bytes")
    if _count_overlaps(wanted) > max_overlaps:
        raise TooComplex(f"more than {max_overlaps} overlapping ranges")
    return _coalesce(wanted)


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """Whether a Range may be honoured given If-Range (strong comparison, RFC 9110 13.1.5).

    `etag` is the quoted strong entity tag. A weak tag or a date never matches: the edge
    sends no Last-Modified, so a date validator cannot prove the file unchanged.
    """
    if if_range is None:
        return True
    return if_range.strip(_OWS) == etag


def content_range(byte_range: ByteRange, size: int) -> str:
    return f"bytes {byte_range.start}-{byte_range.end}/{size}"


def unsatisfied_range(size: int) -> str:
    return f"bytes */{size}"
