"""Coverage-guided fuzz target for the Range parser (atheris).

Run: .venv/bin/python bench/edge/fuzz_ranges.py -max_total_time=60
Any exception other than a RangeError, or a returned range outside the
representation, is a finding.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from download_edge.ranges import RangeError, parse_range


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    size = provider.ConsumeIntInRange(0, 2**63 - 1)
    header = provider.ConsumeUnicodeNoSurrogates(8192)
    try:
        ranges = parse_range(header, size)
    except RangeError:
        return
    if not ranges or any(not 0 <= r.start <= r.end < size for r in ranges):
        raise AssertionError(f"bad ranges {ranges!r} for {header!r} size {size}")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
