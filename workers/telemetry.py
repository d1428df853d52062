"""The worker's Prometheus metrics (ota_worker_*)."""

from __future__ import annotations

from ota import metrics

RECORDS = metrics.counter("worker", "records_total", "Inbox records applied", ("outcome",))
TRANSITIONS = metrics.counter("worker", "transitions_total", "Job state transitions produced")
DEAD_LETTERS = metrics.counter("worker", "dead_letters_total", "Inbox records refused")
CONFLICTS = metrics.counter(
    "worker", "offset_conflicts_total", "Batches recomputed because the stored offset moved"
)
BATCH_SECONDS = metrics.histogram(
    "worker", "batch_seconds", "Poll batch: read, apply, write, produce"
)
TIMEOUTS = metrics.counter(
    "worker", "timeouts_fired_total", "Timeout records written by the sweeper"
)
DUE_LAG_SECONDS = metrics.histogram(
    "worker", "deadline_lag_seconds", "How late the sweeper fired a deadline"
)
KAFKA_DOWN = metrics.gauge(
    "worker", "kafka_down", "1 while the sweeper's probe of Kafka goes unanswered"
)
DEADLINE_PAUSE_SECONDS = metrics.gauge(
    "worker",
    "deadline_pause_seconds",
    "How much later a remembered Kafka outage makes deadlines (0: none)",
)
BROKER_HELD = metrics.counter(
    "worker",
    "deadlines_held_broker_total",
    "Due deadlines held because a device broker outage took the device's connection",
)
OWNED = metrics.gauge("worker", "partitions_owned", "Inbox partitions this process owns")
RESENDS = metrics.counter(
    "worker", "resent_records_total", "Records sent again after the producer gave up on them"
)
