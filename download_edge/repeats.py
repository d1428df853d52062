"""Requests that repeat the connection's last one but for the Range numbers: pure, no I/O.

A device downloading in small ranges sends the same request again and again on one
connection, changing only `N-M` in `Range: bytes=N-M`. When a request arrived as exactly
one read and its Range header held a plain `bytes=N-M` value spelled nowhere else in it,
`learn` splits its bytes around those numbers into a `Template`. A later read made of the
template's prefix, then digits-dash-digits, then its suffix is byte for byte the same
request with other numbers: an HTTP parser would find the same method, target, version
and fields, and that Range value (the last Range field, the one the edge reads, since the
value occurs once). `range_of` recognises such a read without parsing it again.

Digits and a dash cannot end a header line or start a field, so nothing but the numbers
can differ; at most 18 digits each, as `ranges.single_range` takes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VALUE = re.compile(rb"bytes=[0-9]{1,18}-[0-9]{1,18}")
_PREFIX = len(b"bytes=")


@dataclass(frozen=True, slots=True)
class Template:
    prefix: bytes  # up to and including `bytes=`
    suffix: bytes  # from the end of the numbers: the rest of the header line and after


def learn(data: bytes, range_value: str) -> Template | None:
    """The template of a one-read request whose Range field the parser gave as
    `range_value`; None when the request cannot serve as one."""
    value = range_value.encode("latin-1")
    if not _VALUE.fullmatch(value) or data.count(value) != 1 or not data.endswith(b"\r\n\r\n"):
        return None
    at = data.find(value)
    end = at + len(value)
    line = data.rfind(b"\r\n", 0, at)
    name, colon, space = data[line + 2 : at].partition(b":")
    # The value must be the whole field value of a Range line: no other bytes around it.
    if line < 0 or not colon or name.lower() != b"range" or space.strip(b" \t"):
        return None
    if data[end : end + 2] != b"\r\n":
        return None
    return Template(data[: at + _PREFIX], data[end:])


def range_of(template: Template, data: bytes) -> tuple[int, int] | None:
    """The Range numbers (first, last) of `data` if it is the template's request with other
    numbers: what `ranges.simple_numbers` gives for its Range value."""
    prefix, suffix = template.prefix, template.suffix
    if not (data.startswith(prefix) and data.endswith(suffix)):
        return None
    numbers = data[len(prefix) : len(data) - len(suffix)]
    first, _, last = numbers.partition(b"-")
    # bytes.isdigit is ASCII digits only; int() of bytes takes what int() of str would.
    if not (0 < len(first) <= 18 and 0 < len(last) <= 18 and first.isdigit() and last.isdigit()):
        return None
    return int(first), int(last)
