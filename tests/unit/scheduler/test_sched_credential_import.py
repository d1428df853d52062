"""The import's pure parts: splitting a streamed body into lines, and reading each line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.credential_import import MAX_LINE_BYTES, LineError, LineSplitter, parse_line
from scheduler.credentials import ImportEntry


def split(chunks: list[bytes]) -> list[tuple[int, bytes | None]]:
    splitter = LineSplitter()
    out = [line for chunk in chunks for line in splitter.feed(chunk)]
    return out + splitter.end()


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=30), st.data())
def test_any_chunking_gives_the_same_lines(lines: list[bytes], data: st.DataObject) -> None:
    body = b"\n".join(lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=10)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    # A final newline ends the last line rather than starting an empty one.
    expected = lines[:-1] if lines and lines[-1] == b"" else lines
    assert split(chunks) == list(enumerate(expected, start=1))


def test_a_final_newline_adds_no_line() -> None:
    assert split([b"a\nb\n"]) == [(1, b"a"), (2, b"b")]


def test_an_overlong_line_is_dropped_as_it_arrives() -> None:
    splitter = LineSplitter()
    out = splitter.feed(b"ok\n" + b"x" * (MAX_LINE_BYTES + 1))
    assert out == [(1, b"ok")]
    for _ in range(100):  # a line that never ends holds no more than one limit of bytes
        assert splitter.feed(b"x" * MAX_LINE_BYTES) == []
    assert splitter.feed(b"x\nnext\nlast") == [(2, None), (3, b"next")]
    assert splitter.end() == [(4, b"last")]
    assert split([b"y" * (MAX_LINE_BYTES + 5)]) == [(1, None)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"dev-1", ImportEntry(7, "dev-1", None)),
        (b"  dev_1 , secret-0001 \r", ImportEntry(7, "dev_1", "secret-0001")),
        (b"", None),
        (b"   ", None),
        (b"# dev-1,secret", None),
        (None, LineError(7, "", "line_too_long", f"line is over {MAX_LINE_BYTES} bytes")),
        (b"\xff\xfe", LineError(7, "", "bad_line", "line is not UTF-8")),
    ],
)
def test_lines(raw: bytes | None, expected: ImportEntry | LineError | None) -> None:
    assert parse_line(7, raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"a,b,c", "bad_line"),
        (b"dev 1", "bad_device_id"),
        (b"dev-1,", "bad_secret"),
        (b"dev-1,short", "bad_secret"),
        (b"dev-1," + b"s" * 33, "bad_secret"),
        (b"dev-1,not allowed!", "bad_secret"),
        (b",secret-0001", "bad_device_id"),
    ],
)
def test_bad_lines(raw: bytes, code: str) -> None:
    parsed = parse_line(3, raw)
    assert isinstance(parsed, LineError)
    assert (parsed.line, parsed.code) == (3, code)
    assert "allowed!" not in parsed.message  # secrets are never echoed
