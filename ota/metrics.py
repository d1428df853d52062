"""Prometheus helpers: one naming scheme (`ota_<service>_<what>_<unit>`) for every service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ota.health import HEALTH, serve_health_and_metrics

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets from 0.5 ms to 30 s, for produce, Redis and end-to-end timings.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def counter(service: str, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(f"ota_{service}_{name}", doc, labels, registry=REGISTRY)


def gauge(service: str, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(f"ota_{service}_{name}", doc, labels, registry=REGISTRY)


def histogram(
    service: str,
    name: str,
    doc: str,
    labels: tuple[str, ...] = (),
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S,
) -> Histogram:
    return Histogram(f"ota_{service}_{name}", doc, labels, registry=REGISTRY, buckets=buckets)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics, /livez and /readyz (ota/health.py) on a background thread; port 0
    disables it."""
    if port:
        serve_health_and_metrics(port, host, REGISTRY, HEALTH)
