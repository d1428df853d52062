"""The gateway's Prometheus metrics (ota_gateway_*)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from math import inf

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ota.metrics import LATENCY_BUCKETS_S, REGISTRY, counter, gauge, histogram

SERVICE = "gateway"

MESSAGES_IN = counter(
    SERVICE,
    "messages_in_total",
    "MQTT messages received, by event type (or malformed/foreign)",
    ("type",),
)
MESSAGES_OUT = counter(
    SERVICE, "messages_out_total", "Commands published to devices, by type", ("type",)
)
SYSTEM_EVENTS = counter(
    SERVICE,
    "system_events_ignored_total",
    "IoTDA system events accepted and not forwarded ($log, $time_sync), by service and type",
    ("service", "event_type"),
)
DEAD_LETTERS = counter(
    SERVICE, "dead_letters_total", "Messages sent to the dead-letter topic", ("reason",)
)
DROPPED = counter(
    SERVICE,
    "records_dropped_total",
    "Dead letters Kafka refused for good (lost), by Kafka error",
    ("error",),
)


class LoopHistogram:
    """A histogram observed from the event loop's thread only, at the uplink's rate: a
    look-up of the bucket and two additions, where prometheus_client's Histogram takes two
    locks and walks the bounds in Python (about a twentieth of the gateway's CPU per
    message). Exposed as that Histogram is (buckets, count, sum) but for its `_created`
    sample; a scrape copies the counts, so it may see one observation in them and not
    yet in the sum."""

    def __init__(
        self, name: str, documentation: str, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*LATENCY_BUCKETS_S, inf)
        self._labels = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1  # the first bound >= amount
        self._sum += amount

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum
        buckets, cumulative = [], 0
        for label, count in zip(self._labels, counts, strict=True):
            cumulative += count
            buckets.append((label, cumulative))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )


PRODUCE_LATENCY = LoopHistogram(
    f"ota_{SERVICE}_produce_latency_seconds", "Kafka produce until acknowledged"
)
PUBLISH_LATENCY = histogram(SERVICE, "publish_latency_seconds", "MQTT publish until PUBACK")
PRESENCE = counter(
    SERVICE, "presence_events_total", "Presence records written", ("source", "state")
)
CONNECTED = gauge(SERVICE, "connected", "1 while the link is up", ("link",))
BROKER_OUTAGES = counter(
    SERVICE, "broker_outages_total", "Times the link to the device broker dropped and came back"
)
IN_FLIGHT = gauge(SERVICE, "in_flight", "Messages being handled", ("direction",))
PAUSED = gauge(
    SERVICE, "uplink_paused", "1 while the gateway stopped reading uplinks (backpressure)"
)
