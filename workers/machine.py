"""The per-device upgrade job state machine: `step(device, event, now_ms, ref) -> Outcome`.

Rules of this module:
1. Everything that decides a transition lives here, as the `TRANSITIONS` table of
   `(job state, event kind) -> handler` plus the device-level steps (start, cancel,
   timeout routing, promotion of queued jobs). A pair missing from the table leaves the
   job alone (a terminal job gets a timeline note for a device report instead).
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

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ota.catalog import RESULT_ALREADY_LATEST, RESULT_SUCCESS, FailureCause, cause_for_result_code
from ota.jobstates import CANCELLABLE, JobState
from ota.records import ConflictPolicy, JobSpec
from ota.tokens import TOKEN_LIFETIME_S
from workers.effects import Effect, EmitJobEvent, SendUpgrade, SendVersionQuery
from workers.events import Event, Kind
from workers.model import DONE_KEPT, Device, Job

S = JobState
# Effect ids are `<ref>-<index>` with ref `w<partition>-<offset>` (see workers.effects).
EFFECT_ID = re.compile(r"w[0-9]+-[0-9]+-[0-9]+")
# The post-command stages in order, and the cause when the last version query fails there.
_STAGES = (S.COMMAND_SENT, S.DOWNLOADING, S.DOWNLOADED, S.UPDATING)
_STAGE_CAUSES = {
    S.COMMAND_SENT: FailureCause.DOWNLOAD_START_TIMEOUT,
    S.DOWNLOADING: FailureCause.DOWNLOAD_FINISH_TIMEOUT,
    S.DOWNLOADED: FailureCause.UPDATE_START_TIMEOUT,
    S.UPDATING: FailureCause.RESULT_TIMEOUT,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    device: Device
    effects: tuple[Effect, ...]


@dataclass(slots=True)
class _Ctx:
    """Collects the effects of one step; `device` is the device after presence/versions."""

    now_ms: int
    ref: str
    device: Device
    was_online: bool | None
    effects: list[Effect] = field(default_factory=list)

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
                job.task_id,
                job.attempt,
                job.version,
                source.value,
                to.value,
                None if cause is None else cause.value,
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
        moved = replace(
            job,
            state=to,
            version=job.version + 1,
            deadline_ms=deadline_ms,
            cause=cause,
            stage=_furthest(job.stage, to),
        )
        self.emit(moved, job.state, to, cause, detail)
        return moved

    def note(self, job: Job, note: str, **detail: Any) -> None:
        self.emit(job, job.state, job.state, job.cause, {"note": note, **detail})

    def after(self, seconds: int) -> int:
        return self.now_ms + seconds * 1000


# ------------------------------------------------------------------ shared steps


def _furthest(stage: JobState | None, to: JobState) -> JobState | None:
    if to not in _STAGES or (stage is not None and _STAGES.index(stage) >= _STAGES.index(to)):
        return stage
    return to


def _fail(ctx: _Ctx, job: Job, cause: FailureCause, **detail: Any) -> Job:
    """FAILED, or WAITING_RETRY when the cause is retryable and retries are left."""
    if cause.retryable and job.tries < job.spec.retry_count:
        return ctx.move(job, S.WAITING_RETRY, ctx.after(job.spec.retry_interval_s), cause, **detail)
    return ctx.move(job, S.FAILED, None, cause, **detail)


def _begin(ctx: _Ctx, job: Job) -> Job:
    """A fresh try: query at once when the device is (or may be) online, else wait for it.

    A device never seen (presence unknown) gets a version query while the job waits
    online: the answer both proves it online and moves the job on.
    """
    online = ctx.device.online
    windows = job.spec.windows
    if job.spec.require_online and online is not True:
        return _fail(ctx, job, FailureCause.DEVICE_NOT_ONLINE)
    if online is False:
        return ctx.move(job, S.WAITING_ONLINE, ctx.after(windows.online_s))
    _query(ctx, job)
    if online is None:
        return ctx.move(job, S.WAITING_ONLINE, ctx.after(windows.online_s), query="speculative")
    return ctx.move(job, S.QUERYING_VERSION, ctx.after(windows.version_s))


def _query(ctx: _Ctx, job: Job) -> None:
    ctx.effects.append(SendVersionQuery(ctx.next_id(), job.task_id))


def _send_upgrade(ctx: _Ctx, job: Job) -> Job:
    command_id = ctx.next_id()
    ctx.effects.append(SendUpgrade(command_id, job.spec, ctx.now_ms // 1000 + TOKEN_LIFETIME_S))
    return replace(job, command_ms=ctx.now_ms, command_id=command_id)


def _upgrade(ctx: _Ctx, job: Job, reported: str | None) -> Job:
    sent = _send_upgrade(ctx, job)
    return ctx.move(
        sent,
        S.COMMAND_SENT,
        _upgrade_deadline(ctx, sent, sent.spec.windows.download_start_s),
        version=reported,
    )


def _upgrade_deadline(ctx: _Ctx, job: Job, window_s: int) -> int:
    """A post-command state's deadline: its own window, capped by upgrade_total_s."""
    return min(ctx.after(window_s), _total_deadline(job))


def _total_deadline(job: Job) -> int:
    return job.command_ms + job.spec.windows.upgrade_total_s * 1000


def _evaluate_version(ctx: _Ctx, job: Job, reported: str | None) -> Job:
    """The device's answer to a version query, before any command went out."""
    package = job.spec.package
    if reported == package.version:
        return ctx.move(job, S.SUCCEEDED, None, version=reported, by="version_report")
    if package.allowed_sources and reported not in package.allowed_sources:
        return _fail(ctx, job, FailureCause.SOURCE_VERSION_NOT_ALLOWED, version=reported)
    return _upgrade(ctx, job, reported)


def _verify(ctx: _Ctx, job: Job) -> Job:
    _query(ctx, job)
    return ctx.move(job, S.VERIFYING, ctx.after(job.spec.windows.verify_s))


def _answered_version(job: Job, ev: Event) -> str | None:
    """The version this report gives for the task's component (fw or sw), if any."""
    return ev.fw_version if job.spec.task_type.version_field == "fw_version" else ev.sw_version


# ------------------------------------------------------------------ handlers


Handler = Callable[[_Ctx, Job, Event], Job]


def _waiting_online_uplink(ctx: _Ctx, job: Job, ev: Event) -> Job:
    if ev.kind is Kind.VERSION and _answered_version(job, ev) is not None:
        return _evaluate_version(ctx, job, _answered_version(job, ev))
    _query(ctx, job)
    return ctx.move(job, S.QUERYING_VERSION, ctx.after(job.spec.windows.version_s))


def _waiting_online_online(ctx: _Ctx, job: Job, ev: Event) -> Job:
    if ctx.was_online is True:
        return job  # a repeated presence notice changes nothing
    return _waiting_online_uplink(ctx, job, ev)


def _version_answer(ctx: _Ctx, job: Job, ev: Event) -> Job:
    reported = _answered_version(job, ev)
    if reported is None:
        ctx.note(job, "version_missing", field=job.spec.task_type.version_field)
        return job
    return _evaluate_version(ctx, job, reported)


def _querying_offline(ctx: _Ctx, job: Job, ev: Event) -> Job:
    return ctx.move(job, S.WAITING_ONLINE, ctx.after(job.spec.windows.online_s))


def _stale_report(ctx: _Ctx, job: Job, ev: Event) -> Job:
    """A progress report before this try sent its command: it belongs to an older try."""
    ctx.note(job, "stale_report", result_code=ev.result_code, version=ev.version)
    return job


def _command_sent_online(ctx: _Ctx, job: Job, ev: Event) -> Job:
    """The device came back before downloading: resend the command with a fresh token."""
    if ctx.was_online is True:
        return job
    resent = _send_upgrade(ctx, job)
    ctx.note(resent, "command_resent", command_id=resent.command_id)
    return resent


def _download_started(ctx: _Ctx, job: Job, ev: Event) -> Job:
    if ev.package_sha256 != job.spec.package.sha256.lower():
        ctx.note(job, "other_package", package_sha256=ev.package_sha256)
        return job
    return ctx.move(
        job,
        S.DOWNLOADING,
        _upgrade_deadline(ctx, job, job.spec.windows.download_finish_s),
        **_download_detail(ev),
    )


def _download_finished(ctx: _Ctx, job: Job, ev: Event) -> Job:
    if ev.package_sha256 != job.spec.package.sha256.lower():
        ctx.note(job, "other_package", package_sha256=ev.package_sha256)
        return job
    return ctx.move(
        job,
        S.DOWNLOADED,
        _upgrade_deadline(ctx, job, job.spec.windows.update_start_s),
        **_download_detail(ev),
    )


def _progress(ctx: _Ctx, job: Job, ev: Event) -> Job:
    """upgrade_progress_report after the command: progress, a result, or a failure code."""
    echoed = ev.device_event_id
    if echoed and echoed != job.command_id and EFFECT_ID.fullmatch(echoed):
        return _stale_report(ctx, job, ev)  # echoes the command of an older try
    code = ev.result_code
    if code not in (RESULT_SUCCESS, RESULT_ALREADY_LATEST):
        return _fail(ctx, job, cause_for_result_code(code), result_code=code, version=ev.version)
    if code == RESULT_SUCCESS and ev.progress is not None and ev.progress < 100:
        return _in_progress(ctx, job, ev.progress)
    if ev.version == job.spec.package.version:
        return ctx.move(job, S.SUCCEEDED, None, version=ev.version, by="result", result_code=code)
    return _fail(ctx, job, FailureCause.UPDATE_FAILED, result_code=code, version=ev.version)


def _in_progress(ctx: _Ctx, job: Job, progress: int) -> Job:
    windows = job.spec.windows
    if job.state is S.COMMAND_SENT:
        return ctx.move(
            job,
            S.DOWNLOADING,
            _upgrade_deadline(ctx, job, windows.download_finish_s),
            by="progress",
            progress=progress,
        )
    if job.state is S.DOWNLOADED:
        return ctx.move(
            job, S.UPDATING, _upgrade_deadline(ctx, job, windows.result_s), progress=progress
        )
    return job  # more progress in a state that already says so


def _verifying_version(ctx: _Ctx, job: Job, ev: Event) -> Job:
    reported = _answered_version(job, ev)
    if reported is None:
        ctx.note(job, "version_missing", field=job.spec.task_type.version_field)
        return job
    if reported == job.spec.package.version:
        return ctx.move(job, S.SUCCEEDED, None, version=reported, by="verify")
    stage = _stage(job)
    return _fail(ctx, job, _STAGE_CAUSES[stage], version=reported, stage=stage.value)


def _verifying_timeout(ctx: _Ctx, job: Job, ev: Event) -> Job:
    """No answer to the last query: after update progress, IoTDA's check timeout."""
    stage = _stage(job)
    cause = FailureCause.VERIFY_TIMEOUT if stage is S.UPDATING else _STAGE_CAUSES[stage]
    return _fail(ctx, job, cause, stage=stage.value)


def _stage(job: Job) -> JobState:
    return job.stage or S.COMMAND_SENT


def _verifying_download(ctx: _Ctx, job: Job, ev: Event) -> Job:
    """The edge's record of a download reached the last version query: the stage moves on."""
    if ev.package_sha256 != job.spec.package.sha256.lower():
        ctx.note(job, "other_package", package_sha256=ev.package_sha256)
        return job
    ctx.note(job, ev.kind.value, **_download_detail(ev))
    return replace(job, stage=_furthest(job.stage, _DOWNLOAD_STATES[ev.kind]))


def _verifying_progress(ctx: _Ctx, job: Job, ev: Event) -> Job:
    """A result ends the query; progress after the download counts as update progress."""
    if ev.result_code == RESULT_SUCCESS and ev.progress is not None and ev.progress < 100:
        if job.stage is S.DOWNLOADED:
            return replace(job, stage=S.UPDATING)
        return job
    return _progress(ctx, job, ev)


def _download_detail(ev: Event) -> dict[str, Any]:
    detail: dict[str, Any] = {"by": "edge"}
    if ev.kind is Kind.DOWNLOAD_FINISHED:
        detail.update(bytes=ev.bytes_served, duration_ms=ev.duration_ms)
    return detail


def _timeout_updating(ctx: _Ctx, job: Job, ev: Event) -> Job:
    """No result after update progress (its own window or the whole one): ask once more."""
    return _verify(ctx, job)


def _timeout_failing(cause: FailureCause) -> Handler:
    def handler(ctx: _Ctx, job: Job, ev: Event) -> Job:
        return _fail(ctx, job, cause)

    return handler


def _timeout_upgrading(cause: FailureCause) -> Handler:
    """A post-command window ran out: its own cause when that window was the shorter one,
    else (download plus result ran out) a last version query."""

    def handler(ctx: _Ctx, job: Job, ev: Event) -> Job:
        if job.deadline_ms is not None and job.deadline_ms >= _total_deadline(job):
            return _verify(ctx, job)
        return _fail(ctx, job, cause)

    return handler


def _timeout_retry(ctx: _Ctx, job: Job, ev: Event) -> Job:
    return _begin(ctx, replace(job, tries=job.tries + 1, command_id="", command_ms=0, stage=None))


F = FailureCause
TRANSITIONS: dict[tuple[JobState, Kind], Handler] = {
    (S.WAITING_ONLINE, Kind.ONLINE): _waiting_online_online,
    (S.WAITING_ONLINE, Kind.VERSION): _waiting_online_uplink,
    (S.WAITING_ONLINE, Kind.SDK_INFO): _waiting_online_uplink,
    (S.WAITING_ONLINE, Kind.PROGRESS): _waiting_online_uplink,
    (S.WAITING_ONLINE, Kind.TIMEOUT): _timeout_failing(F.ONLINE_TIMEOUT),
    (S.QUERYING_VERSION, Kind.VERSION): _version_answer,
    (S.QUERYING_VERSION, Kind.OFFLINE): _querying_offline,
    (S.QUERYING_VERSION, Kind.PROGRESS): _stale_report,
    (S.QUERYING_VERSION, Kind.TIMEOUT): _timeout_failing(F.VERSION_REPORT_TIMEOUT),
    (S.COMMAND_SENT, Kind.ONLINE): _command_sent_online,
    (S.COMMAND_SENT, Kind.DOWNLOAD_STARTED): _download_started,
    (S.COMMAND_SENT, Kind.DOWNLOAD_FINISHED): _download_finished,
    (S.COMMAND_SENT, Kind.PROGRESS): _progress,
    (S.COMMAND_SENT, Kind.TIMEOUT): _timeout_upgrading(F.DOWNLOAD_START_TIMEOUT),
    (S.DOWNLOADING, Kind.DOWNLOAD_FINISHED): _download_finished,
    (S.DOWNLOADING, Kind.PROGRESS): _progress,
    (S.DOWNLOADING, Kind.TIMEOUT): _timeout_upgrading(F.DOWNLOAD_FINISH_TIMEOUT),
    (S.DOWNLOADED, Kind.PROGRESS): _progress,
    (S.DOWNLOADED, Kind.TIMEOUT): _timeout_upgrading(F.UPDATE_START_TIMEOUT),
    (S.UPDATING, Kind.PROGRESS): _progress,
    (S.UPDATING, Kind.TIMEOUT): _timeout_updating,
    (S.VERIFYING, Kind.VERSION): _verifying_version,
    (S.VERIFYING, Kind.PROGRESS): _verifying_progress,
    (S.VERIFYING, Kind.DOWNLOAD_STARTED): _verifying_download,
    (S.VERIFYING, Kind.DOWNLOAD_FINISHED): _verifying_download,
    (S.VERIFYING, Kind.TIMEOUT): _verifying_timeout,
    (S.WAITING_RETRY, Kind.TIMEOUT): _timeout_retry,
}

# Reports a finished job notes on its timeline (versions and presence are routine).
_NOTED_WHEN_FINISHED = frozenset({Kind.PROGRESS, Kind.DOWNLOAD_STARTED, Kind.DOWNLOAD_FINISHED})
_DOWNLOAD_STATES = {Kind.DOWNLOAD_STARTED: S.DOWNLOADING, Kind.DOWNLOAD_FINISHED: S.DOWNLOADED}


# ------------------------------------------------------------------ device-level steps


def step(device: Device, event: Event, now_ms: int, ref: str) -> Outcome:
    """Apply one event at platform time `now_ms`; `ref` names the record (effect ids)."""
    observed = _observe(device, event)
    ctx = _Ctx(now_ms, ref, observed, device.online)
    if event.kind is Kind.START:
        result = _start(ctx, observed, event)
    elif event.kind is Kind.CANCEL:
        result = _cancel(ctx, observed, event)
    elif event.kind is Kind.TIMEOUT:
        result = _timeout(ctx, observed, event)
    else:
        result = _dispatch(ctx, observed, event)
    return Outcome(_promote(ctx, result), tuple(ctx.effects))


def _observe(device: Device, ev: Event) -> Device:
    """Presence and versions, which every event updates before the job sees it."""
    if ev.kind is Kind.OFFLINE:
        return device if device.online is False else replace(device, online=False)
    if ev.kind is Kind.ONLINE or ev.kind.uplink:
        fw = ev.fw_version if ev.fw_version is not None else device.fw_version
        sw = ev.sw_version if ev.sw_version is not None else device.sw_version
        if ev.kind is Kind.PROGRESS and device.job is not None and not device.job.state.terminal:
            if device.job.spec.task_type.version_field == "fw_version":
                fw = ev.version
            else:
                sw = ev.version
        if device.online is True and fw == device.fw_version and sw == device.sw_version:
            return device
        return replace(device, online=True, fw_version=fw, sw_version=sw)
    return device


def _dispatch(ctx: _Ctx, device: Device, ev: Event) -> Device:
    job = device.job
    if job is None:
        return device
    if ev.kind in _DOWNLOAD_STATES and _noted_before_result(ctx, job, ev):
        return device
    if job.state.terminal:
        if ev.kind in _NOTED_WHEN_FINISHED:
            ctx.note(job, "late_report", event=ev.kind.value, result_code=ev.result_code)
        return device
    handler = TRANSITIONS.get((job.state, ev.kind))
    if handler is None:
        return device
    ctx.device = device
    return _with_job(device, handler(ctx, job, ev))


def _noted_before_result(ctx: _Ctx, job: Job, ev: Event) -> bool:
    """The edge's record of a download stage this finished try never saw (for the package
    its command asked for) is noted in the state it stands for, at the job's version:
    views keyed by (attempt, version) keep the result, the timeline places it before."""
    state = _DOWNLOAD_STATES[ev.kind]
    if not (
        (job.state.terminal or job.state is S.WAITING_RETRY)
        and bool(job.command_id)
        and ev.package_sha256 == job.spec.package.sha256.lower()
        and _furthest(job.stage, state) is not job.stage
    ):
        return False
    detail = {"note": ev.kind.value, "before_result": True, **_download_detail(ev)}
    ctx.emit(job, state, state, None, detail)
    return True


def _with_job(device: Device, job: Job) -> Device:
    return device if job is device.job else replace(device, job=job)


def _start(ctx: _Ctx, device: Device, ev: Event) -> Device:
    spec, attempt = ev.spec, ev.attempt
    assert spec is not None  # event_from_record guarantees it for START
    current = device.job
    if current is not None and current.task_id == spec.task_id:
        return _restart(ctx, device, current, spec, attempt)
    for queued in device.queue:
        if queued.task_id == spec.task_id:
            if attempt > queued.attempt:
                renewed = replace(queued, spec=spec, attempt=attempt)
                return replace(
                    device, queue=tuple(renewed if q is queued else q for q in device.queue)
                )
            return device
    if any(task == spec.task_id and attempt <= done for task, done in device.done):
        return device
    fresh = Job(spec, attempt, S.QUEUED, 0)
    if current is not None and not current.state.terminal:
        return _conflict(ctx, device, current, fresh)
    return _replace_current(ctx, device, fresh)


def _restart(ctx: _Ctx, device: Device, current: Job, spec: JobSpec, attempt: int) -> Device:
    """A job start for the current job's task: a redelivery, an older or a newer attempt."""
    if attempt == current.attempt:
        return device
    if attempt < current.attempt:
        ctx.note(current, "stale_attempt", attempt_received=attempt)
        return device
    if not current.state.terminal and current.state not in CANCELLABLE:
        ctx.note(current, "attempt_while_busy", attempt_received=attempt)
        return device
    # The new attempt keeps counting versions so no timeout of the old one can match it.
    fresh = Job(spec, attempt, current.state, current.version)
    return replace(device, job=_begin(ctx, fresh))


def _conflict(ctx: _Ctx, device: Device, current: Job, fresh: Job) -> Device:
    if fresh.spec.on_conflict is ConflictPolicy.FAIL:
        ctx.move(fresh, S.FAILED, None, FailureCause.TASK_CONFLICT, active_task=current.task_id)
        return replace(device, done=_remember(device.done, fresh))
    queued = replace(fresh, deadline_ms=ctx.after(fresh.spec.windows.online_s))
    ctx.note(queued, "queued", active_task=current.task_id)
    return replace(device, queue=(*device.queue, queued))


def _replace_current(ctx: _Ctx, device: Device, fresh: Job) -> Device:
    done = device.done if device.job is None else _remember(device.done, device.job)
    ctx.device = replace(device, done=done)
    return replace(ctx.device, job=_begin(ctx, fresh))


def _remember(done: tuple[tuple[str, int], ...], job: Job) -> tuple[tuple[str, int], ...]:
    kept = tuple(entry for entry in done if entry[0] != job.task_id)
    return (*kept, (job.task_id, job.attempt))[-DONE_KEPT:]


def _cancel(ctx: _Ctx, device: Device, ev: Event) -> Device:
    job = device.job
    if job is not None and job.task_id == ev.task_id and not job.state.terminal:
        if job.state in CANCELLABLE:
            return replace(device, job=ctx.move(job, S.CANCELLED, None))
        ctx.note(job, "cancel_refused")
        return device
    for queued in device.queue:
        if queued.task_id == ev.task_id:
            ctx.move(queued, S.CANCELLED, None)
            return replace(
                device,
                queue=tuple(q for q in device.queue if q is not queued),
                done=_remember(device.done, queued),
            )
    return device


def _timeout(ctx: _Ctx, device: Device, ev: Event) -> Device:
    """Apply a timeout only to the job and version it was set for, once it is due."""
    job = device.job
    if job is not None and _due(job, ev, ctx.now_ms):
        handler = TRANSITIONS.get((job.state, Kind.TIMEOUT))
        if handler is not None:
            return _with_job(device, handler(ctx, job, ev))
    for queued in device.queue:
        if _due(queued, ev, ctx.now_ms):
            ctx.move(queued, S.FAILED, None, FailureCause.TASK_CONFLICT, waited="online_s")
            return replace(
                device,
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


def _promote(ctx: _Ctx, device: Device) -> Device:
    """Once the current job is finished, the first queued job starts."""
    while device.queue and (device.job is None or device.job.state.terminal):
        head, rest = device.queue[0], device.queue[1:]
        done = device.done if device.job is None else _remember(device.done, device.job)
        ctx.device = replace(device, queue=rest, done=done)
        device = replace(ctx.device, job=_begin(ctx, replace(head, deadline_ms=None)))
    return device
