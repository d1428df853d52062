"""One step of the job state machine: the context that collects its effects, and the moves
every part of the machine shares (begin a try, fail it, query the version).

Rules of this module: pure, like `workers.machine` (no I/O, no clock: time is the `now_ms`
of the record being applied); only moves that both the device-level steps
(`workers.machine`) and the transition table (`workers.transitions`) use live here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ota.catalog import FailureCause
from ota.jobstates import JobState
from ota.retry_rules import retry_after_s
from ota.settings import TOKEN_LIFETIME_S
from workers.effects import Effect, EmitJobEvent, SendVersionQuery
from workers.model import Device, Job

S = JobState
# The post-command stages in order (`Job.stage` holds the furthest one a try reached).
STAGES = (S.COMMAND_SENT, S.DOWNLOADING, S.DOWNLOADED, S.UPDATING)
# The names and codes job events carry, looked up: an enum's `.value` is a descriptor call
# several times dearer than a dict lookup, and every event reads two or three.
_STATE_NAMES = {state: state.value for state in JobState}
_CAUSE_CODES = {cause: cause.value for cause in FailureCause}


@dataclass(slots=True)
class Ctx:
    """Collects the effects of one step; `device` is the device after presence/versions;
    `reconnected` is true for an online notice of a connection the device did not have
    (it was not known online, or the notice names another connection);
    `token_lifetime_s` is how long the token of an upgrade sent now lives (a setting,
    OTA_TOKEN_LIFETIME_S, handed in like the time: the machine reads no configuration)."""

    now_ms: int
    ref: str
    device: Device
    reconnected: bool
    effects: list[Effect] = field(default_factory=list)
    token_lifetime_s: int = TOKEN_LIFETIME_S

    def next_id(self) -> str:
        return f"{self.ref}-{len(self.effects)}"

    def emit(
        self,
        job: Job,
        source: JobState,
        to: JobState,
        cause: FailureCause | None,
        detail: Mapping[str, Any],
    ) -> None:
        """A job event from `source` to `to`; `job` gives the task, attempt and version."""
        self.effects.append(
            EmitJobEvent(
                self.next_id(),
                job.spec.task_id,
                job.attempt,
                job.version,
                _STATE_NAMES[source],
                _STATE_NAMES[to],
                None if cause is None else _CAUSE_CODES[cause],
                dict(detail),
            )
        )

    def move(
        self,
        job: Job,
        to: JobState,
        deadline_ms: int | None,
        cause: FailureCause | None = None,
        **detail: Any,
    ) -> Job:
        # `job._replace(state=to, version=..., deadline_ms=..., cause=..., stage=...)`, built
        # positionally: `_replace` pops every field from a keyword dict and costs about
        # twice as much, and nearly every transition is a move.
        spec, attempt, state, version, _, tries, _, sent_ms, sent_id, stage, pct, expires = job
        moved = Job(
            spec,
            attempt,
            to,
            version + 1,
            deadline_ms,
            tries,
            cause,
            sent_ms,
            sent_id,
            furthest(stage, to),
            pct,
            expires,
        )
        self.emit(moved, state, to, cause, detail)
        return moved

    def note(self, job: Job, note: str, **detail: Any) -> None:
        self.emit(job, job.state, job.state, job.cause, {"note": note, **detail})

    def after(self, seconds: int) -> int:
        return self.now_ms + seconds * 1000


def furthest(stage: JobState | None, to: JobState) -> JobState | None:
    if to not in STAGES or (stage is not None and STAGES.index(stage) >= STAGES.index(to)):
        return stage
    return to


def fail(ctx: Ctx, job: Job, cause: FailureCause, **detail: Any) -> Job:
    """FAILED, or WAITING_RETRY when the task's retry rules retry this cause (ota.retry_rules)."""
    wait_s = retry_after_s(job.spec, cause, job.tries)
    if wait_s is not None:
        return ctx.move(job, S.WAITING_RETRY, ctx.after(wait_s), cause, **detail)
    return ctx.move(job, S.FAILED, None, cause, **detail)


def begin(ctx: Ctx, job: Job) -> Job:
    """A fresh try: query at once when the device is (or may be) online, else wait for it.

    A device never seen (presence unknown) gets a version query while the job waits
    online: the answer both proves it online and moves the job on.
    """
    online = ctx.device.online
    windows = job.spec.windows
    if job.spec.require_online and online is not True:
        return fail(ctx, job, FailureCause.DEVICE_NOT_ONLINE)
    if online is False:
        return ctx.move(job, S.WAITING_ONLINE, ctx.after(windows.online_s))
    query(ctx, job)
    if online is None:
        return ctx.move(job, S.WAITING_ONLINE, ctx.after(windows.online_s), query="speculative")
    return ctx.move(job, S.QUERYING_VERSION, ctx.after(windows.version_s))


def query(ctx: Ctx, job: Job) -> None:
    ctx.effects.append(SendVersionQuery(ctx.next_id(), job.task_id))
