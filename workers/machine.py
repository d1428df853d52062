"""The per-device upgrade job state machine: `step(device, event, now_ms, ref) -> Outcome`.

Rules of this module:
1. The device-level steps live here (start, cancel, timeout routing, promotion of queued
   jobs, presence and versions); a job's own transitions are the `TRANSITIONS` table of
   `workers.transitions`, shared moves are in `workers.context`. A pair missing from the
   table leaves the job alone (a terminal job gets a timeline note for a device report).
2. No I/O and no clock: time is the `now_ms` of the record being applied (a timeout
   carries the sweeper's time), so replaying the log reproduces every state and effect.
3. Effects are data (`workers.effects`); their ids come from `ref`, the record's place
   in the log, so a replay produces the same ids.

Invariants (checked by tests/unit/workers/test_workers_machine_props.py):
- a terminal job never changes; late, duplicate or older-attempt reports only add notes;
- SUCCEEDED only when the target version was reported (result or version report);
- every non-terminal job has a deadline, every terminal one none;
- FAILED and WAITING_RETRY carry exactly one catalogued cause, other states none.

When `upgrade_total_s` closes, a last version query decides: the target version succeeds,
else the cause names the furthest stage reached (`Job.stage`). An edge download record
reaching a finished try is a `before_result` note (docs/workers.md, "Timeline order").
"""

from __future__ import annotations

from typing import NamedTuple

from ota.catalog import FailureCause
from ota.jobstates import CANCELLABLE, TERMINAL, JobState
from ota.records import ConflictPolicy, JobSpec
from ota.settings import TOKEN_LIFETIME_S
from workers.context import Ctx, begin, furthest
from workers.effects import Effect
from workers.events import UPLINK, Event, Kind
from workers.model import DONE_KEPT, Device, Job
from workers.transitions import DOWNLOAD_STATES, NOTED_WHEN_FINISHED, TRANSITIONS, download_detail

__all__ = ["TRANSITIONS", "Outcome", "step"]

S = JobState
# States are tested with `in TERMINAL`, not `JobState.terminal`: a set lookup is several
# times cheaper than an enum property, and each record asks several times.


class Outcome(NamedTuple):
    device: Device
    effects: tuple[Effect, ...]


def step(
    device: Device,
    event: Event,
    now_ms: int,
    ref: str,
    token_lifetime_s: int = TOKEN_LIFETIME_S,
) -> Outcome:
    """Apply one event at platform time `now_ms`; `ref` names the record (effect ids);
    upgrade commands sent now carry tokens living `token_lifetime_s`."""
    reconnected = _reconnected(device, event)
    came_online = reconnected or (event.kind in UPLINK and device.online is not True)
    observed = _observe(device, event, now_ms if came_online else None)
    ctx = Ctx(now_ms, ref, observed, reconnected, [], token_lifetime_s)
    if event.kind is Kind.START:
        result = _start(ctx, observed, event)
    elif event.kind is Kind.CANCEL:
        result = _cancel(ctx, observed, event)
    elif event.kind is Kind.TIMEOUT:
        result = _timeout(ctx, observed, event)
    else:
        result = _dispatch(ctx, observed, event)
    # Only a device with queued jobs can promote one (skips a call for nearly every record).
    promoted = _promote(ctx, result) if result.queue else result
    return Outcome(promoted, tuple(ctx.effects))


def _reconnected(device: Device, ev: Event) -> bool:
    """An online notice for a connection the device did not have. A broker that crashed
    announces no offline, so a new connection is the only sign that commands sent before
    may be lost; a notice without a connection (uplink traffic) proves presence only. A
    device known online only from its traffic (no connection named yet: its first report
    reached the inbox before the broker's online notice) learns its connection from the
    notice: that is the connection its traffic came on, not a new one."""
    if ev.kind is not Kind.ONLINE:
        return False
    if device.online is not True:
        return True
    known = device.connection
    return ev.connection is not None and known is not None and ev.connection != known


def _observe(device: Device, ev: Event, connected_ms: int | None) -> Device:
    """Presence and versions, which every event updates before the job sees it;
    `connected_ms` is set when the event says the device came online (a reconnect, or
    traffic from a device thought offline)."""
    if ev.kind is Kind.OFFLINE:
        if device.online is False and device.connection is None:
            return device
        return device._replace(online=False, connection=None)
    if ev.kind is Kind.ONLINE or ev.kind in UPLINK:
        fw = ev.fw_version if ev.fw_version is not None else device.fw_version
        sw = ev.sw_version if ev.sw_version is not None else device.sw_version
        if ev.kind is Kind.PROGRESS and device.job is not None and device.job.state not in TERMINAL:
            if device.job.spec.task_type.version_field == "fw_version":
                fw = ev.version
            else:
                sw = ev.version
        connection = device.connection if ev.connection is None else ev.connection
        if (
            device.online is True
            and fw == device.fw_version
            and sw == device.sw_version
            and connection == device.connection
            and connected_ms is None
        ):
            return device
        # `device._replace(online=True, fw_version=fw, ...)`, built positionally in field
        # order: about half the cost of `_replace`, and most uplink records get here.
        return Device(
            True,
            fw,
            sw,
            device.job,
            device.queue,
            device.done,
            connection,
            device.connected_ms if connected_ms is None else connected_ms,
        )
    return device


def _dispatch(ctx: Ctx, device: Device, ev: Event) -> Device:
    job = device.job
    if job is None:
        return device
    if ev.kind in DOWNLOAD_STATES and _noted_before_result(ctx, job, ev):
        return device
    if job.state in TERMINAL:
        if ev.kind in NOTED_WHEN_FINISHED:
            ctx.note(job, "late_report", event=ev.kind.value, result_code=ev.result_code)
        return device
    handler = TRANSITIONS.get((job.state, ev.kind))
    if handler is None:
        return device
    ctx.device = device
    return _with_job(device, handler(ctx, job, ev))


def _noted_before_result(ctx: Ctx, job: Job, ev: Event) -> bool:
    """The edge's record of a download stage this finished try never saw (for the package
    its command asked for) is noted in the state it stands for, at the job's version:
    views keyed by (attempt, version) keep the result, the timeline places it before."""
    state = DOWNLOAD_STATES[ev.kind]
    if not (
        (job.state in TERMINAL or job.state is S.WAITING_RETRY)
        and bool(job.command_id)
        and ev.package_sha256 == job.spec.package.sha256.lower()
        and furthest(job.stage, state) is not job.stage
    ):
        return False
    detail = {"note": ev.kind.value, "before_result": True, **download_detail(ev)}
    ctx.emit(job, state, state, None, detail)
    return True


def _with_job(device: Device, job: Job) -> Device:
    if job is device.job:
        return device
    # `device._replace(job=job)`, positionally (see `_observe`): nearly every transition.
    online, fw, sw, _, queue, done, connection, connected_ms = device
    return Device(online, fw, sw, job, queue, done, connection, connected_ms)


def _start(ctx: Ctx, device: Device, ev: Event) -> Device:
    spec, attempt = ev.spec, ev.attempt
    assert spec is not None  # event_from_record guarantees it for START
    current = device.job
    if current is not None and current.task_id == spec.task_id:
        return _restart(ctx, device, current, spec, attempt)
    for queued in device.queue:
        if queued.task_id == spec.task_id:
            if attempt > queued.attempt:
                renewed = queued._replace(spec=spec, attempt=attempt)
                return device._replace(
                    queue=tuple(renewed if q is queued else q for q in device.queue)
                )
            return device
    # (A device that finished nothing yet builds no generator: most job starts.)
    if device.done and any(task == spec.task_id and attempt <= done for task, done in device.done):
        return device
    fresh = Job(spec, attempt, S.QUEUED, 0)
    if current is not None and current.state not in TERMINAL:
        return _conflict(ctx, device, current, fresh)
    return _replace_current(ctx, device, fresh)


def _restart(ctx: Ctx, device: Device, current: Job, spec: JobSpec, attempt: int) -> Device:
    """A job start for the current job's task: a redelivery, an older or a newer attempt."""
    if attempt == current.attempt:
        return device
    if attempt < current.attempt:
        ctx.note(current, "stale_attempt", attempt_received=attempt)
        return device
    if current.state not in TERMINAL and current.state not in CANCELLABLE:
        ctx.note(current, "attempt_while_busy", attempt_received=attempt)
        return device
    # The new attempt keeps counting versions so no timeout of the old one can match it.
    fresh = Job(spec, attempt, current.state, current.version)
    return device._replace(job=begin(ctx, fresh))


def _conflict(ctx: Ctx, device: Device, current: Job, fresh: Job) -> Device:
    if fresh.spec.on_conflict is ConflictPolicy.FAIL:
        ctx.move(fresh, S.FAILED, None, FailureCause.TASK_CONFLICT, active_task=current.task_id)
        return device._replace(done=_remember(device.done, fresh))
    queued = fresh._replace(deadline_ms=ctx.after(fresh.spec.windows.online_s))
    ctx.note(queued, "queued", active_task=current.task_id)
    return device._replace(queue=(*device.queue, queued))


def _replace_current(ctx: Ctx, device: Device, fresh: Job) -> Device:
    # A device without a job (its first) has nothing to remember: no copy of it to build.
    if device.job is not None:
        ctx.device = device._replace(done=_remember(device.done, device.job))
    else:
        ctx.device = device
    return _with_job(ctx.device, begin(ctx, fresh))


def _remember(done: tuple[tuple[str, int], ...], job: Job) -> tuple[tuple[str, int], ...]:
    kept = tuple(entry for entry in done if entry[0] != job.task_id)
    return (*kept, (job.task_id, job.attempt))[-DONE_KEPT:]


def _cancel(ctx: Ctx, device: Device, ev: Event) -> Device:
    job = device.job
    if job is not None and job.task_id == ev.task_id and job.state not in TERMINAL:
        if job.state in CANCELLABLE:
            return device._replace(job=ctx.move(job, S.CANCELLED, None))
        ctx.note(job, "cancel_refused")
        return device
    for queued in device.queue:
        if queued.task_id == ev.task_id:
            ctx.move(queued, S.CANCELLED, None)
            return device._replace(
                queue=tuple(q for q in device.queue if q is not queued),
                done=_remember(device.done, queued),
            )
    return device


def _timeout(ctx: Ctx, device: Device, ev: Event) -> Device:
    """Apply a timeout only to the job and version it was set for, once it is due."""
    job = device.job
    if job is not None and _due(job, ev, ctx.now_ms):
        handler = TRANSITIONS.get((job.state, Kind.TIMEOUT))
        if handler is not None:
            return _with_job(device, handler(ctx, job, ev))
    for queued in device.queue:
        if _due(queued, ev, ctx.now_ms):
            ctx.move(queued, S.FAILED, None, FailureCause.TASK_CONFLICT, waited="online_s")
            return device._replace(
                queue=tuple(q for q in device.queue if q is not queued),
                done=_remember(device.done, queued),
            )
    return device


def _due(job: Job, ev: Event, now_ms: int) -> bool:
    return (
        job.task_id == ev.task_id
        and job.version == ev.job_version
        and job.deadline_ms is not None
        and now_ms >= job.deadline_ms
    )


def _promote(ctx: Ctx, device: Device) -> Device:
    """Once the current job is finished, the first queued job starts."""
    while device.queue and (device.job is None or device.job.state in TERMINAL):
        head, rest = device.queue[0], device.queue[1:]
        done = device.done if device.job is None else _remember(device.done, device.job)
        ctx.device = device._replace(queue=rest, done=done)
        device = ctx.device._replace(job=begin(ctx, head._replace(deadline_ms=None)))
    return device
