"""The edge's Prometheus metrics (`ota_edge_*`)."""

from __future__ import annotations

from ota import metrics

SERVICE = "edge"

requests = metrics.counter(SERVICE, "requests_total", "Requests answered, by status", ("status",))
bytes_sent = metrics.counter(SERVICE, "bytes_sent_total", "Body bytes accepted by the kernel")
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
progress_dropped = metrics.counter(
    SERVICE, "progress_dropped_total", "Delivered-byte notes dropped (queue full or store down)"
)
