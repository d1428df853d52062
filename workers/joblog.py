"""The worker's log of device jobs: one INFO line per finished job (the outcome and its
cause, with device and task ids), and with DEBUG every transition.

The full history stays in ota.job-events; these lines are for searching a device or a
task in the log store without reading Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ota.catalog import FailureCause
from ota.jobstates import TERMINAL
from ota.records import JobEventRecord

log = logging.getLogger("workers.jobs")
FINISHED = frozenset(state.value for state in TERMINAL)
CAUSES = {int(cause): cause for cause in FailureCause}


def fields_of(event: JobEventRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "device_id": event.device_id,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "from_state": event.from_state,
        "state": event.to_state,
    }
    if event.cause is not None:
        cause = CAUSES.get(event.cause)
        fields["cause"] = event.cause
        fields["cause_name"] = cause.name if cause is not None else "unknown"
    return fields


def log_jobs(events: Iterable[JobEventRecord]) -> None:
    """Log the applied job events (only ever called once per applied record)."""
    every = log.isEnabledFor(logging.DEBUG)
    if not every and not log.isEnabledFor(logging.INFO):
        return
    for event in events:
        if event.to_state in FINISHED and event.from_state not in FINISHED:
            log.info("job finished", extra=fields_of(event))
        elif every:
            log.debug("job event", extra=fields_of(event))
