"""The edge's Prometheus metrics (`ota_edge_*`)."""

from __future__ import annotations

from bisect import bisect_left

from ota import metrics

SERVICE = "edge"

requests = metrics.counter(SERVICE, "requests_total", "Requests answered, by status", ("status",))
bytes_sent = metrics.counter(
    SERVICE,
    "bytes_sent_total",
    "Body bytes the clients' TCP acknowledged (download_edge/delivery.py)",
)
bytes_unconfirmed = metrics.counter(
    SERVICE,
    "bytes_unconfirmed_total",
    "Body bytes written to connections that ended before the client acknowledged them",
)
connections = metrics.gauge(SERVICE, "connections_active", "Open client connections")
connections_refused = metrics.counter(
    SERVICE, "connections_refused_total", "Connections refused at the connection limit"
)
timeouts = metrics.counter(
    SERVICE, "timeouts_total", "Connections closed by a timeout, by kind", ("kind",)
)
resumed = metrics.counter(
    SERVICE, "resumed_downloads_total", "GET requests continuing a download (range from > 0)"
)
ttfb = metrics.histogram(
    SERVICE, "time_to_first_byte_seconds", "Request complete to first response byte sent"
)
fills = metrics.counter(
    SERVICE,
    "cache_misses_total",
    "Requests that missed the open-package cache, by outcome",
    ("outcome",),
)
events = metrics.counter(SERVICE, "download_events_total", "Download records produced", ("phase",))
events_resent = metrics.counter(
    SERVICE,
    "download_events_resent_total",
    "Download records produced again because Kafka's acknowledgement never came",
)
progress_dropped = metrics.counter(
    SERVICE, "progress_dropped_total", "Delivered-byte notes dropped (queue full or store down)"
)


# The histogram's bucket bounds, +Inf last, as prometheus_client keeps them.
_TTFB_BOUNDS = (*metrics.LATENCY_BUCKETS_S, float("inf"))
_FIRST_BOUND = _TTFB_BOUNDS[0]


class Tally:
    """Hot-path counts kept as plain integers; the server's sweeper adds them to Prometheus
    twice a second (a Prometheus increment takes a lock on every call, and a histogram
    observation walks its buckets in Python)."""

    __slots__ = (
        "bytes_sent",
        "bytes_unconfirmed",
        "resumed",
        "small_206",
        "statuses",
        "ttfb_counts",
        "ttfb_sum",
    )

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.bytes_sent = 0
        self.bytes_unconfirmed = 0
        self.resumed = 0
        self.small_206 = 0  # 206s of the small-range path, joined to statuses at flush
        self.ttfb_counts = [0] * len(_TTFB_BOUNDS)
        self.ttfb_sum = 0.0

    def status(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def first_byte(self, seconds: float) -> None:
        """A time to first byte: counted in the bucket `Histogram.observe` would pick."""
        self.ttfb_counts[bisect_left(_TTFB_BOUNDS, seconds)] += 1
        self.ttfb_sum += seconds

    def sent_small(self, resumed: bool, first_byte_s: float) -> None:
        """A 206 written whole at once: every count it makes but its bytes (counted once
        delivered), in one call."""
        # Nearly always the first bucket: one comparison instead of the bisection.
        bucket = 0 if first_byte_s <= _FIRST_BOUND else bisect_left(_TTFB_BOUNDS, first_byte_s)
        self.ttfb_counts[bucket] += 1
        self.ttfb_sum += first_byte_s
        if resumed:
            self.resumed += 1
        self.small_206 += 1

    def flush(self) -> None:
        statuses, self.statuses = self.statuses, {}
        if self.small_206:
            statuses[206] = statuses.get(206, 0) + self.small_206
            self.small_206 = 0
        for status, count in statuses.items():
            requests.labels(str(status)).inc(count)
        if self.bytes_sent:
            bytes_sent.inc(self.bytes_sent)
            self.bytes_sent = 0
        if self.bytes_unconfirmed:
            bytes_unconfirmed.inc(self.bytes_unconfirmed)
            self.bytes_unconfirmed = 0
        if self.resumed:
            resumed.inc(self.resumed)
            self.resumed = 0
        counts, self.ttfb_counts = self.ttfb_counts, [0] * len(_TTFB_BOUNDS)
        if any(counts):
            # Histogram has no public batch observe; its per-bucket values are what
            # observe() increments (tests/unit/download_edge checks the two agree).
            for index, count in enumerate(counts):
                if count:
                    ttfb._buckets[index].inc(count)
            ttfb._sum.inc(self.ttfb_sum)
        self.ttfb_sum = 0.0


tally = Tally()
