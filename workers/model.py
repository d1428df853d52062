"""The per-device state a worker keeps: presence, known versions, the current job and
the jobs queued behind it. Plain immutable values; no I/O (the codec is `workers.codec`).

They are named tuples, not frozen dataclasses: every record the worker applies builds a
few of each, and a tuple is built in C, several times faster than a frozen dataclass
(which sets each field through `object.__setattr__`); `_replace` stands for
`dataclasses.replace`.

A device holds at most one job that is in flight (`job`, or the last finished one, kept
so late reports can be noted against it), jobs waiting behind it (`queue`, conflict
policy WAIT) and the (task, attempt) pairs of jobs it finished earlier (`done`, bounded),
so a re-sent job start for a finished job stays a no-op.
"""

from __future__ import annotations

from typing import NamedTuple

from ota.catalog import FailureCause
from ota.jobstates import TERMINAL, JobState
from ota.records import JobSpec

DONE_KEPT = 4  # finished (task, attempt) pairs remembered besides the current job


class Job(NamedTuple):
    spec: JobSpec
    attempt: int
    state: JobState
    version: int  # bumped on every transition; timeouts carry it to prove they are current
    deadline_ms: int | None = None  # None exactly when the job is terminal
    tries: int = 0  # retries used so far (IoTDA's FailWaitRetry cycles)
    cause: FailureCause | None = None  # set in FAILED and WAITING_RETRY
    command_ms: int = 0  # when the current upgrade command went out (start of upgrade_total_s)
    command_id: str = ""  # id of that command, which devices may echo as event_id
    # The furthest post-command state this try reached (COMMAND_SENT .. UPDATING); kept
    # through VERIFYING so the last version query's failure names the stage seen.
    stage: JobState | None = None
    # The highest progress the device reported while this try waited on its download
    # (workers.progress): a later report not above it is download progress, not update.
    download_pct: int | None = None
    # When the token of the last upgrade command sent for this try expires (epoch s; 0:
    # none sent, or a state stored before it was kept). A report after it gets a fresh one.
    token_expires_s: int = 0

    @property
    def task_id(self) -> str:
        return self.spec.task_id


class Device(NamedTuple):
    online: bool | None = None  # None: never seen by this worker
    fw_version: str | None = None
    sw_version: str | None = None
    job: Job | None = None
    queue: tuple[Job, ...] = ()
    done: tuple[tuple[str, int], ...] = ()
    # The connection the device is online with, as the last broker online notice named it
    # (None: offline, or never named); another one announced means it reconnected.
    connection: str | None = None
    # When the device was last seen coming online (platform ms of the notice or report
    # that said so; 0: not known): a connection from before a broker outage is one the
    # outage took (workers.broker_hold).
    connected_ms: int = 0

    @property
    def active(self) -> bool:
        """True while any job still needs this device (its key then never expires)."""
        # A set lookup, not the enum's `terminal` property: asked a few times per record.
        return bool(self.queue) or (self.job is not None and self.job.state not in TERMINAL)

    @property
    def deadline_ms(self) -> int | None:
        """The earliest deadline of the current and queued jobs: the device's sweeper entry."""
        if not self.queue:  # the common case, asked once per device written
            return None if self.job is None else self.job.deadline_ms
        due = [j.deadline_ms for j in (self.job, *self.queue) if j is not None]
        present = [d for d in due if d is not None]
        return min(present) if present else None
