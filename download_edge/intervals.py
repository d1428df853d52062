"""Byte intervals delivered to a device, merged before they go to the progress store.

Pure. Intervals are half-open `(start, end)`, kept sorted and disjoint, adjacent ones
joined, so a download resumed any number of times collapses to one interval.
"""

from __future__ import annotations

Interval = tuple[int, int]


def merge(intervals: list[Interval], new: list[Interval]) -> list[Interval]:
    """The union of both lists, sorted, disjoint and with adjacent intervals joined."""
    merged: list[Interval] = []
    for start, end in sorted(intervals + [iv for iv in new if iv[1] > iv[0]]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
