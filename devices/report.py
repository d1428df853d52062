"""A fleet's report, and merging the reports of a fleet split over several processes.

Each report carries, next to its percentiles, a histogram of the upgrade durations in
buckets 1% wide (bucket b holds durations in (1.01^(b-1), 1.01^b] milliseconds), so the
reports of several simulator processes merge into percentiles of the whole fleet
within 1%, not an average of percentiles.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BUCKET_GROWTH = 1.01
_LOG_GROWTH = math.log(BUCKET_GROWTH)


@dataclass(frozen=True)
class FleetReport:
    size: int
    online: int
    outcomes: dict[str, int]
    durations_s: dict[str, float]  # of finished upgrades: p50, p90, p99, max
    histogram: dict[str, int]  # duration bucket (see `bucket_of`) -> devices

    def as_dict(self) -> dict[str, object]:
        return {
            "size": self.size,
            "online": self.online,
            "outcomes": self.outcomes,
            "durations_s": self.durations_s,
            "histogram": self.histogram,
        }


def summarize(durations: list[float]) -> dict[str, float]:
    if not durations:
        return {}
    ordered = sorted(durations)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "p50": round(statistics.median(ordered), 3),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
    }


def bucket_of(duration_s: float) -> int:
    """The histogram bucket of a duration (everything up to 1 ms is bucket 0)."""
    ms = duration_s * 1000
    return 0 if ms <= 1 else math.ceil(math.log(ms) / _LOG_GROWTH - 1e-9)


def bucket_top_s(bucket: int) -> float:
    """The upper edge of a bucket, in seconds."""
    return float(BUCKET_GROWTH**bucket / 1000)


def histogram(durations: Iterable[float]) -> dict[str, int]:
    counts = Counter(bucket_of(d) for d in durations)
    return {str(b): counts[b] for b in sorted(counts)}


def summarize_histogram(buckets: Mapping[str, int], max_s: float) -> dict[str, float]:
    """p50/p90/p99 as bucket upper edges (within 1%, never above the true max), and max."""
    counts = sorted((int(b), n) for b, n in buckets.items())
    total = sum(n for _, n in counts)
    if not total:
        return {}

    def at(q: float) -> float:
        rank = min(total - 1, int(q * total))
        seen = 0
        for bucket, n in counts:
            seen += n
            if seen > rank:
                return round(min(bucket_top_s(bucket), max_s), 3)
        raise AssertionError("unreachable: rank < total")

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(max_s, 3)}


def merge(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One report for the fleets of several processes: counts and outcomes summed,
    histograms added, percentiles recomputed from the merged histogram."""
    size = online = 0
    outcomes: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    max_s = 0.0
    for report in reports:
        size += int(report.get("size", 0))
        online += int(report.get("online", 0))
        outcomes.update(report.get("outcomes") or {})
        buckets.update(report.get("histogram") or {})
        max_s = max(max_s, float((report.get("durations_s") or {}).get("max", 0.0)))
    merged_buckets = {b: buckets[b] for b in sorted(buckets, key=int)}
    return {
        "size": size,
        "online": online,
        "outcomes": dict(sorted(outcomes.items())),
        "durations_s": summarize_histogram(merged_buckets, max_s),
        "histogram": merged_buckets,
    }
