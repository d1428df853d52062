"""The transition table of the job state machine: `(job state, event kind) -> handler`.

Rules of this module:
1. Every decision a job makes on a device report, an edge record or its own timeout lives
   here, as one handler per pair of `TRANSITIONS`. A pair missing from the table leaves
   the job alone. Starting, cancelling, routing timeouts and promoting queued jobs are
   device-level steps (`workers.machine`).
2. Pure: no I/O, no clock (see `workers.machine`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ota.catalog import RESULT_ALREADY_LATEST, RESULT_SUCCESS, FailureCause, cause_for_result_code
from ota.jobstates import JobState
from ota.records import SuccessMode
from ota.reports import HealthCheck
from workers.context import Ctx, begin, fail, furthest, query
from workers.effects import SendUpgrade
from workers.events import Event, Kind
from workers.model import Job
from workers.progress import is_download_progress, raised_mark

S = JobState
# Effect ids are `<ref>-<index>` with ref `w<partition>-<offset>` (see workers.effects).
EFFECT_ID = re.compile(r"w[0-9]+-[0-9]+-[0-9]+")
# The cause when the last version query fails at a post-command stage.
STAGE_CAUSES = {
    S.COMMAND_SENT: FailureCause.DOWNLOAD_START_TIMEOUT,
    S.DOWNLOADING: FailureCause.DOWNLOAD_FINISH_TIMEOUT,
    S.DOWNLOADED: FailureCause.UPDATE_START_TIMEOUT,
    S.UPDATING: FailureCause.RESULT_TIMEOUT,
}
# The states where the device may still be fetching the package: once its token runs out,
# a reconnect or a download progress report there gets the upgrade again with a fresh one
# (docs/workers.md, "Tokens").
FETCHING = frozenset({S.COMMAND_SENT, S.DOWNLOADING})
# A progress report renews the token once less than this share of its lifetime is left:
# before it runs out, so a device that reports as it downloads is never refused.
RENEW_WHEN_LEFT = 0.1


def _send_upgrade(ctx: Ctx, job: Job, command_id: str) -> Job:
    """The upgrade command under `command_id`, with a token minted now; the job keeps
    when that token expires."""
    expires_s = ctx.now_ms // 1000 + ctx.token_lifetime_s
    ctx.effects.append(SendUpgrade(command_id, job.spec, expires_s))
    return job._replace(token_expires_s=expires_s)


def _token_running_out(ctx: Ctx, job: Job) -> bool:
    """The last token sent has expired, or less than `RENEW_WHEN_LEFT` of it is left. A
    state stored before the expiry was kept counts from the command's time."""
    expires_s = job.token_expires_s or job.command_ms // 1000 + ctx.token_lifetime_s
    return ctx.now_ms // 1000 >= expires_s - int(ctx.token_lifetime_s * RENEW_WHEN_LEFT)


def _upgrade(ctx: Ctx, job: Job, reported: str | None) -> Job:
    command_id = ctx.next_id()
    sent = _send_upgrade(ctx, job, command_id)._replace(
        command_ms=ctx.now_ms, command_id=command_id
    )
    return ctx.move(
        sent,
        S.COMMAND_SENT,
        _upgrade_deadline(ctx, sent, sent.spec.windows.download_start_s),
        version=reported,
    )


def _upgrade_deadline(ctx: Ctx, job: Job, window_s: int) -> int:
    """A post-command state's deadline: its own window, capped by upgrade_total_s."""
    return min(ctx.after(window_s), _total_deadline(job))


def _total_deadline(job: Job) -> int:
    return job.command_ms + job.spec.windows.upgrade_total_s * 1000


def _reached(ctx: Ctx, job: Job, version: str, health: HealthCheck | None, **detail: Any) -> Job:
    """The device reported the target version: the job succeeds, or with success
    "confirmed" it succeeds only on a passed health check given with the version, fails
    on a failed one, and otherwise waits for the verdict in CONFIRMING."""
    if job.spec.success is SuccessMode.REPORTED:
        return ctx.move(job, S.SUCCEEDED, None, version=version, **detail)
    if health is HealthCheck.PASSED:
        passed = health.value
        return ctx.move(job, S.SUCCEEDED, None, version=version, health_check=passed, **detail)
    if health is HealthCheck.FAILED:
        return fail(ctx, job, FailureCause.HEALTH_CHECK_FAILED, version=version, **detail)
    deadline = ctx.after(job.spec.windows.confirm_s)
    return ctx.move(job, S.CONFIRMING, deadline, version=version, **detail)


def _evaluate_version(
    ctx: Ctx, job: Job, reported: str | None, health: HealthCheck | None = None
) -> Job:
    """The device's answer to a version query, before any command went out."""
    package = job.spec.package
    if reported == package.version:
        return _reached(ctx, job, reported, health, by="version_report")
    if package.allowed_sources and reported not in package.allowed_sources:
        return fail(ctx, job, FailureCause.SOURCE_VERSION_NOT_ALLOWED, version=reported)
    return _upgrade(ctx, job, reported)


def _verify(ctx: Ctx, job: Job) -> Job:
    query(ctx, job)
    return ctx.move(job, S.VERIFYING, ctx.after(job.spec.windows.verify_s))


def _answered_version(job: Job, ev: Event) -> str | None:
    """The version this report gives for the task's component (fw or sw), if any."""
    return ev.fw_version if job.spec.task_type.version_field == "fw_version" else ev.sw_version


Handler = Callable[[Ctx, Job, Event], Job]


def _waiting_online_uplink(ctx: Ctx, job: Job, ev: Event) -> Job:
    if ev.kind is Kind.VERSION and _answered_version(job, ev) is not None:
        return _evaluate_version(ctx, job, _answered_version(job, ev), ev.health_check)
    query(ctx, job)
    return ctx.move(job, S.QUERYING_VERSION, ctx.after(job.spec.windows.version_s))


def _waiting_online_online(ctx: Ctx, job: Job, ev: Event) -> Job:
    if not ctx.reconnected:
        return job  # a repeated presence notice changes nothing
    return _waiting_online_uplink(ctx, job, ev)


def _version_answer(ctx: Ctx, job: Job, ev: Event) -> Job:
    reported = _answered_version(job, ev)
    if reported is None:
        ctx.note(job, "version_missing", field=job.spec.task_type.version_field)
        return job
    return _evaluate_version(ctx, job, reported, ev.health_check)


def _query_online(ctx: Ctx, job: Job, ev: Event) -> Job:
    """The device reconnected while a version query waited for its answer: the query may
    have been lost with the old connection, so it is sent again with a fresh window (a new
    deadline, so the version moves and a timeout set for the old one no longer matches)."""
    if not ctx.reconnected:
        return job
    query(ctx, job)
    windows = job.spec.windows
    window_s = windows.version_s if job.state is S.QUERYING_VERSION else windows.verify_s
    requeried = job._replace(version=job.version + 1, deadline_ms=ctx.after(window_s))
    ctx.note(requeried, "query_resent")
    return requeried


def _querying_offline(ctx: Ctx, job: Job, ev: Event) -> Job:
    return ctx.move(job, S.WAITING_ONLINE, ctx.after(job.spec.windows.online_s))


def _stale_report(ctx: Ctx, job: Job, ev: Event) -> Job:
    """A progress report before this try sent its command: it belongs to an older try."""
    ctx.note(job, "stale_report", result_code=ev.result_code, version=ev.version)
    return job


def _upgrading_online(ctx: Ctx, job: Job, ev: Event) -> Job:
    """A reconnect after the command went out (or while waiting for the health verdict). A broker that crashed lost what was in flight
    both ways (clean sessions): the command itself, and reports the device published around
    the crash. In COMMAND_SENT the upgrade goes out again under the same command id with a
    fresh token (a device that has it ignores the repeat but for its URL and goes on; one
    that lost it starts). In DOWNLOADING the device has the command: it gets it again only
    when its token runs out (a device back from a long absence), for the fresh URL. In
    every post-command state a version query follows: the target version ends the job (its
    result was lost), any other changes nothing. Deadline and version stay."""
    if not ctx.reconnected:
        return job
    if job.state is S.COMMAND_SENT:
        job = _send_upgrade(ctx, job, job.command_id)
        ctx.note(job, "command_resent", command_id=job.command_id)
    else:
        renewed = _renew_token(ctx, job, "reconnect")
        if renewed is job:
            ctx.note(job, "reconnect_query")
        job = renewed
    query(ctx, job)
    return job


def _renew_token(ctx: Ctx, job: Job, by: str) -> Job:
    """While the device fetches the package (COMMAND_SENT, DOWNLOADING) and the command's
    token runs out (or ran out: the edge refused the device with 410): the upgrade again
    under the same command id with a fresh token, noted `token_renewed` with what brought
    it (`by`: progress, reconnect). Deadline and version stay."""
    if job.state not in FETCHING or not _token_running_out(ctx, job):
        return job
    return _renewed(ctx, job, by)


def _renewed(ctx: Ctx, job: Job, by: str) -> Job:
    renewed = _send_upgrade(ctx, job, job.command_id)
    ctx.note(renewed, "token_renewed", command_id=job.command_id, by=by)
    return renewed


def _upgrading_version(ctx: Ctx, job: Job, ev: Event) -> Job:
    """A version report after the command (the answer to a reconnect's query, or one the
    device sent by itself, at boot after installing): the target version is the upgrade
    done; another version, or none for the task's component, leaves the state's own reports
    and window to decide (a device mid-download still runs the old version)."""
    reported = _answered_version(job, ev)
    if reported != job.spec.package.version:
        return job
    return _reached(ctx, job, reported, ev.health_check, by="version_report")


def _download_stage(to: S, window: Callable[[Job], int]) -> Handler:
    """The edge saw the job's package download start or finish: move to `to`, with the
    next stage's window; a download of another package is only noted."""

    def handle(ctx: Ctx, job: Job, ev: Event) -> Job:
        if ev.package_sha256 != job.spec.package.sha256.lower():
            ctx.note(job, "other_package", package_sha256=ev.package_sha256)
            return job
        deadline = _upgrade_deadline(ctx, job, window(job))
        return ctx.move(job, to, deadline, **download_detail(ev))

    return handle


_download_started = _download_stage(S.DOWNLOADING, lambda j: j.spec.windows.download_finish_s)
_download_finished = _download_stage(S.DOWNLOADED, lambda j: j.spec.windows.update_start_s)


def _progress(ctx: Ctx, job: Job, ev: Event) -> Job:
    """upgrade_progress_report after the command: progress, a result, or a failure code."""
    echoed = ev.device_event_id
    if echoed and echoed != job.command_id and EFFECT_ID.fullmatch(echoed):
        return _stale_report(ctx, job, ev)  # echoes the command of an older try
    code = ev.result_code
    if code not in (RESULT_SUCCESS, RESULT_ALREADY_LATEST):
        return fail(ctx, job, cause_for_result_code(code), result_code=code, version=ev.version)
    if code == RESULT_SUCCESS and ev.progress is not None and ev.progress < 100:
        return _in_progress(ctx, job, ev.progress, ev.description)
    if ev.version == job.spec.package.version:
        return _reached(ctx, job, ev.version, None, by="result", result_code=code)
    return fail(ctx, job, FailureCause.UPDATE_FAILED, result_code=code, version=ev.version)


def _in_progress(ctx: Ctx, job: Job, progress: int, description: str | None) -> Job:
    """Progress before the download finished raises its mark; after it, only update progress
    (workers.progress) moves the job on, a late download report is a timeline note."""
    windows = job.spec.windows
    if job.state in FETCHING:
        marked = job._replace(download_pct=raised_mark(job.download_pct, progress))
        if job.state is S.DOWNLOADING:
            return _renew_token(ctx, marked, "progress")
        moved = ctx.move(
            marked,
            S.DOWNLOADING,
            _upgrade_deadline(ctx, job, windows.download_finish_s),
            by="progress",
            progress=progress,
        )
        return _renew_token(ctx, moved, "progress")
    if job.state is S.DOWNLOADED:
        if is_download_progress(job.download_pct, progress, description):
            return _late_download_progress(ctx, job, progress)
        return ctx.move(
            job, S.UPDATING, _upgrade_deadline(ctx, job, windows.result_s), progress=progress
        )
    return job  # more progress in a state that already says so


def _late_download_progress(ctx: Ctx, job: Job, progress: int) -> Job:
    """Download progress after the edge sent the package's last byte: sent is not
    received (a connection cut with the rest in its buffers), so the device may still be
    fetching. Noted; once the token ran out (the edge refused the device's request for the
    rest with 410, which it reports), the upgrade goes again with a fresh token, as in
    DOWNLOADING."""
    ctx.note(job, "download_progress", progress=progress)
    marked = job._replace(download_pct=raised_mark(job.download_pct, progress))
    return _renewed(ctx, marked, "progress") if _token_running_out(ctx, marked) else marked


def _verifying_version(ctx: Ctx, job: Job, ev: Event) -> Job:
    reported = _answered_version(job, ev)
    if reported is None:
        ctx.note(job, "version_missing", field=job.spec.task_type.version_field)
        return job
    if reported == job.spec.package.version:
        return _reached(ctx, job, reported, ev.health_check, by="verify")
    stage = _stage(job)
    return fail(ctx, job, STAGE_CAUSES[stage], version=reported, stage=stage.value)


def _verifying_timeout(ctx: Ctx, job: Job, ev: Event) -> Job:
    """No answer to the last query: after update progress, IoTDA's check timeout."""
    stage = _stage(job)
    cause = FailureCause.VERIFY_TIMEOUT if stage is S.UPDATING else STAGE_CAUSES[stage]
    return fail(ctx, job, cause, stage=stage.value)


def _stage(job: Job) -> JobState:
    return job.stage or S.COMMAND_SENT


def _verifying_download(ctx: Ctx, job: Job, ev: Event) -> Job:
    """The edge's record of a download reached the last version query: the stage moves on."""
    if ev.package_sha256 != job.spec.package.sha256.lower():
        ctx.note(job, "other_package", package_sha256=ev.package_sha256)
        return job
    ctx.note(job, ev.kind.value, **download_detail(ev))
    return job._replace(stage=furthest(job.stage, DOWNLOAD_STATES[ev.kind]))


def _verifying_progress(ctx: Ctx, job: Job, ev: Event) -> Job:
    """A result ends the query; progress after the download counts as update progress."""
    if ev.result_code == RESULT_SUCCESS and ev.progress is not None and ev.progress < 100:
        if job.stage is not S.DOWNLOADED:
            return job
        if is_download_progress(job.download_pct, ev.progress, ev.description):
            return _late_download_progress(ctx, job, ev.progress)
        return job._replace(stage=S.UPDATING)
    return _progress(ctx, job, ev)


def _confirming_version(ctx: Ctx, job: Job, ev: Event) -> Job:
    """A version or SDK report while the job waits for the health verdict: the target with
    a verdict ends the job; another version is the device back on its old one (it rebooted
    into it, or rolled the upgrade back); the target alone, or none, changes nothing."""
    reported = _answered_version(job, ev)
    if reported is None:
        return job
    if reported != job.spec.package.version:
        return fail(ctx, job, FailureCause.ROLLED_BACK, version=reported, by=ev.kind.value)
    if ev.health_check is HealthCheck.PASSED:
        verdict = ev.health_check.value
        return ctx.move(
            job, S.SUCCEEDED, None, by="confirmation", version=reported, health_check=verdict
        )
    if ev.health_check is HealthCheck.FAILED:
        return fail(ctx, job, FailureCause.HEALTH_CHECK_FAILED, version=reported)
    return job


def _confirming_progress(ctx: Ctx, job: Job, ev: Event) -> Job:
    """A progress report while waiting for the verdict: the device naming another version
    than the target is back on its old one; a repeat of its result is only noted."""
    echoed = ev.device_event_id
    if echoed and echoed != job.command_id and EFFECT_ID.fullmatch(echoed):
        return _stale_report(ctx, job, ev)  # echoes the command of an older try
    if ev.version != job.spec.package.version:
        detail = {"version": ev.version, "result_code": ev.result_code}
        return fail(ctx, job, FailureCause.ROLLED_BACK, by="progress", **detail)
    ctx.note(job, "progress_while_confirming", result_code=ev.result_code, progress=ev.progress)
    return job


def download_detail(ev: Event) -> dict[str, Any]:
    detail: dict[str, Any] = {"by": "edge"}
    if ev.kind is Kind.DOWNLOAD_FINISHED:
        detail.update(bytes=ev.bytes_served, duration_ms=ev.duration_ms)
    return detail


def _timeout_updating(ctx: Ctx, job: Job, ev: Event) -> Job:
    """No result after update progress (its own window or the whole one): ask once more."""
    return _verify(ctx, job)


def _timeout_failing(cause: FailureCause) -> Handler:
    def handler(ctx: Ctx, job: Job, ev: Event) -> Job:
        return fail(ctx, job, cause)

    return handler


def _timeout_upgrading(cause: FailureCause) -> Handler:
    """A post-command window ran out: its own cause when that window was the shorter one,
    else (download plus result ran out) a last version query."""

    def handler(ctx: Ctx, job: Job, ev: Event) -> Job:
        if job.deadline_ms is not None and job.deadline_ms >= _total_deadline(job):
            return _verify(ctx, job)
        return fail(ctx, job, cause)

    return handler


def _timeout_retry(ctx: Ctx, job: Job, ev: Event) -> Job:
    fresh = job._replace(tries=job.tries + 1, command_id="", command_ms=0, stage=None)
    return begin(ctx, fresh._replace(download_pct=None, token_expires_s=0))


F = FailureCause
TRANSITIONS: dict[tuple[JobState, Kind], Handler] = {
    (S.WAITING_ONLINE, Kind.ONLINE): _waiting_online_online,
    (S.WAITING_ONLINE, Kind.VERSION): _waiting_online_uplink,
    (S.WAITING_ONLINE, Kind.SDK_INFO): _waiting_online_uplink,
    (S.WAITING_ONLINE, Kind.PROGRESS): _waiting_online_uplink,
    (S.WAITING_ONLINE, Kind.TIMEOUT): _timeout_failing(F.ONLINE_TIMEOUT),
    (S.QUERYING_VERSION, Kind.ONLINE): _query_online,
    (S.QUERYING_VERSION, Kind.VERSION): _version_answer,
    (S.QUERYING_VERSION, Kind.OFFLINE): _querying_offline,
    (S.QUERYING_VERSION, Kind.PROGRESS): _stale_report,
    (S.QUERYING_VERSION, Kind.TIMEOUT): _timeout_failing(F.VERSION_REPORT_TIMEOUT),
    (S.COMMAND_SENT, Kind.ONLINE): _upgrading_online,
    (S.COMMAND_SENT, Kind.VERSION): _upgrading_version,
    (S.COMMAND_SENT, Kind.DOWNLOAD_STARTED): _download_started,
    (S.COMMAND_SENT, Kind.DOWNLOAD_FINISHED): _download_finished,
    (S.COMMAND_SENT, Kind.PROGRESS): _progress,
    (S.COMMAND_SENT, Kind.TIMEOUT): _timeout_upgrading(F.DOWNLOAD_START_TIMEOUT),
    (S.DOWNLOADING, Kind.DOWNLOAD_FINISHED): _download_finished,
    (S.DOWNLOADING, Kind.PROGRESS): _progress,
    (S.DOWNLOADING, Kind.ONLINE): _upgrading_online,
    (S.DOWNLOADING, Kind.VERSION): _upgrading_version,
    (S.DOWNLOADING, Kind.TIMEOUT): _timeout_upgrading(F.DOWNLOAD_FINISH_TIMEOUT),
    (S.DOWNLOADED, Kind.PROGRESS): _progress,
    (S.DOWNLOADED, Kind.ONLINE): _upgrading_online,
    (S.DOWNLOADED, Kind.VERSION): _upgrading_version,
    (S.DOWNLOADED, Kind.TIMEOUT): _timeout_upgrading(F.UPDATE_START_TIMEOUT),
    (S.UPDATING, Kind.PROGRESS): _progress,
    (S.UPDATING, Kind.ONLINE): _upgrading_online,
    (S.UPDATING, Kind.VERSION): _upgrading_version,
    (S.UPDATING, Kind.TIMEOUT): _timeout_updating,
    (S.VERIFYING, Kind.ONLINE): _query_online,
    (S.VERIFYING, Kind.VERSION): _verifying_version,
    (S.VERIFYING, Kind.PROGRESS): _verifying_progress,
    (S.VERIFYING, Kind.DOWNLOAD_STARTED): _verifying_download,
    (S.VERIFYING, Kind.DOWNLOAD_FINISHED): _verifying_download,
    (S.VERIFYING, Kind.TIMEOUT): _verifying_timeout,
    (S.CONFIRMING, Kind.VERSION): _confirming_version,
    (S.CONFIRMING, Kind.SDK_INFO): _confirming_version,
    (S.CONFIRMING, Kind.PROGRESS): _confirming_progress,
    (S.CONFIRMING, Kind.ONLINE): _upgrading_online,
    (S.CONFIRMING, Kind.TIMEOUT): _timeout_failing(F.CONFIRM_TIMEOUT),
    (S.WAITING_RETRY, Kind.TIMEOUT): _timeout_retry,
}

# Reports a finished job notes on its timeline (versions and presence are routine).
NOTED_WHEN_FINISHED = frozenset({Kind.PROGRESS, Kind.DOWNLOAD_STARTED, Kind.DOWNLOAD_FINISHED})
DOWNLOAD_STATES = {Kind.DOWNLOAD_STARTED: S.DOWNLOADING, Kind.DOWNLOAD_FINISHED: S.DOWNLOADED}
