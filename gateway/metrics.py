"""The gateway's Prometheus metrics (ota_gateway_*)."""

from __future__ import annotations

from ota.metrics import counter, gauge, histogram

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
PRODUCE_LATENCY = histogram(SERVICE, "produce_latency_seconds", "Kafka produce until acknowledged")
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
