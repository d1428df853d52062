"""A device's job events read back from `ota.job-events`, with every id and detail.

Redis holds a device's newest timeline entries only, a succeeded try folded into its
result (scheduler/timeline.py); the log holds them all, on the device's partition from the
offset of its first job event (`history` in the device's view). `read_history` scans that
partition from an offset and returns the device's events as the API's timeline entries,
oldest first, each with its `offset`. A page scans at most `SCAN_MAX` records of the
partition (other devices' records included) and stops at the partition's end as the page
began: its cursor is the offset to go on from, None at the end.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import TopicPartition

from ota.kafka_clients import make_consumer
from ota.settings import CommonSettings
from scheduler import timeline
from scheduler.consumers import parse_job_events

SCAN_MAX = 50_000  # records of the partition one page reads at most
READ_TIMEOUT_S = 10.0  # one page's reading, at most
POLL_MS = 200


def read_history(
    settings: CommonSettings, partition: int, start: int, device_id: str, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """(entries, cursor): up to `limit` of the device's job events from `start` on, and
    the offset to read on from (None: the partition's end was reached). Blocking: run it
    in an executor."""
    tp = TopicPartition(settings.topics.job_events, partition)
    consumer = make_consumer(settings, group_id=None, client_id="ota-scheduler-history")
    found: list[dict[str, Any]] = []
    try:
        end = consumer.end_offsets([tp])[tp]
        consumer.assign_at({tp: start})
        position, stop = start, min(end, start + SCAN_MAX)
        deadline = time.monotonic() + READ_TIMEOUT_S
        key = device_id.encode()
        while position < stop and len(found) < limit and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=POLL_MS).get(tp, [])
            for record in polled:
                if record.offset >= stop or len(found) >= limit:
                    break
                position = record.offset + 1
                if record.key == key:
                    found += _entries(record)
            if not polled:  # past offsets no record holds (deleted by retention)
                position = max(position, consumer.position(tp))
    finally:
        consumer.close()
    return found, None if position >= end else position


def _entries(record: Any) -> list[dict[str, Any]]:
    """The record as a timeline entry with its offset; none for a record that is no job
    event (the job-event group dead-lettered it)."""
    parsed = parse_job_events([record])
    return [
        timeline.decode(timeline.encode(event)) | {"offset": record.offset}
        for event in parsed.items
    ]
