"""Repeated requests: whatever `range_of` accepts parses (httptools) to the template's
request with only the Range value changed."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from download_edge import repeats
from download_edge.ranges import simple_numbers

Parsed = tuple[bytes, bytes, str, list[tuple[bytes, bytes]], bool]


class _Recorder:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete += 1


def parse(data: bytes) -> Parsed | None:
    """One complete request's method, target, version, fields and keep-alive; else None."""
    recorder = _Recorder()
    parser = httptools.HttpRequestParser(recorder)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    if recorder.complete != 1:
        return None
    return (
        parser.get_method(),
        recorder.url,
        parser.get_http_version(),
        recorder.headers,
        parser.should_keep_alive(),
    )


def range_field(parsed: Parsed) -> str | None:
    """The Range value the edge reads: the last field so named."""
    values = [v for n, v in parsed[3] if n.lower() == b"range"]
    return values[-1].decode("latin-1") if values else None


def without_range(parsed: Parsed) -> Parsed:
    last = max(i for i, (n, _) in enumerate(parsed[3]) if n.lower() == b"range")
    headers = [h for i, h in enumerate(parsed[3]) if i != last]
    return (parsed[0], parsed[1], parsed[2], headers, parsed[4])


numbers = st.tuples(
    st.integers(min_value=0, max_value=10**18 - 1), st.integers(min_value=0, max_value=10**18 - 1)
).map(lambda pair: f"{pair[0]}-{pair[1]}")
names = st.sampled_from(
    ["Host", "Authorization", "X-Range", "Accept", "range", "RANGE", "If-Range"]
)
values = st.text(alphabet="abc019-= ,bytes", min_size=0, max_size=20).map(str.strip)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, str]:
    fields = draw(st.lists(st.tuples(names, values), max_size=5))
    value = "bytes=" + draw(numbers)
    position = draw(st.integers(min_value=0, max_value=len(fields)))
    fields.insert(position, (draw(st.sampled_from(["Range", "range"])), value))
    space = draw(st.sampled_from(["", " ", "  ", "\t"]))
    target = draw(st.sampled_from(["/packages/sha256/" + "ab" * 32, "/x?bytes=1-2", "/"]))
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{n}:{space}{v}\r\n" for n, v in fields)
    return (head + "\r\n").encode("latin-1"), value


@given(requests(), numbers)
def test_a_recognised_repeat_parses_as_the_template_with_another_range(
    request: tuple[bytes, str], other: str
) -> None:
    data, _ = request
    first = parse(data)
    assume(first is not None)
    assert first is not None
    value = range_field(first)
    assert value is not None
    template = repeats.learn(data, value)
    if template is None:
        return
    again = template.prefix + other.encode() + template.suffix
    assert repeats.range_of(template, again) == simple_numbers("bytes=" + other)
    second = parse(again)
    assert second is not None
    assert range_field(second) == "bytes=" + other
    assert without_range(second) == without_range(first)


@given(requests(), st.data())
def test_whatever_is_accepted_is_the_same_request(
    request: tuple[bytes, str], data: st.DataObject
) -> None:
    """Edits anywhere (insertions, deletions, replacements): a read `range_of` accepts is
    always the template's request with only the Range value changed."""
    original, _ = request
    first = parse(original)
    assume(first is not None)
    assert first is not None
    value = range_field(first)
    assert value is not None
    template = repeats.learn(original, value)
    assume(template is not None)
    assert template is not None
    edited = bytearray(original)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(edited)))
        byte = data.draw(st.sampled_from(b"0123456789-\r\n :=aB"))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind == "insert":
            edited.insert(at, byte)
        elif at < len(edited):
            if kind == "delete":
                del edited[at]
            else:
                edited[at] = byte
    accepted = repeats.range_of(template, bytes(edited))
    if accepted is None:
        return
    second = parse(bytes(edited))
    assert second is not None
    field = range_field(second)
    assert field is not None
    assert simple_numbers(field) == accepted
    assert without_range(second) == without_range(first)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"GET / HTTP/1.1\r\nRange: bytes=0-9 \r\n\r\n", "bytes=0-9"),  # trailing space
        (b"GET / HTTP/1.1\r\nRange: bytes=0-9\r\nX: bytes=0-9\r\n\r\n", "bytes=0-9"),  # twice
        (b"GET / HTTP/1.1\r\nRange: bytes=0-9,20-29\r\n\r\n", "bytes=0-9,20-29"),  # several
        (b"GET / HTTP/1.1\r\nRange: bytes=-9\r\n\r\n", "bytes=-9"),  # suffix range
        (b"GET / HTTP/1.1\r\nRange: bytes=0-9\r\n\r\nGET", "bytes=0-9"),  # more after it
    ],
)
def test_no_template(data: bytes, value: str) -> None:
    assert repeats.learn(data, value) is None


def test_template_and_misses() -> None:
    data = b"GET /p HTTP/1.1\r\nHost: h\r\nRange: bytes=0-9\r\nAuthorization: Bearer t\r\n\r\n"
    template = repeats.learn(data, "bytes=0-9")
    assert template == repeats.Template(
        b"GET /p HTTP/1.1\r\nHost: h\r\nRange: bytes=", b"\r\nAuthorization: Bearer t\r\n\r\n"
    )
    assert repeats.range_of(template, data.replace(b"0-9", b"4096-8191")) == (4096, 8191)
    for miss in (
        data.replace(b"0-9", b"0-"),
        data.replace(b"0-9", b"-9"),
        data.replace(b"0-9", b"0-9,1-2"),
        data.replace(b"0-9", b"1" * 19 + b"-2"),
        data.replace(b"Bearer t", b"Bearer u"),
        data + b"GET",
        data[:-1],
    ):
        assert repeats.range_of(template, miss) is None, miss
