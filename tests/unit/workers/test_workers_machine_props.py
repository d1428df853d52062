"""Hypothesis stateful tests: random reports, duplicates, reorderings, presence flaps,
cancellations, stale and early timeouts and clock jumps against the machine's invariants.
Tokens live ten minutes here, so clock jumps run them out mid-download."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ota.catalog import FailureCause
from ota.jobstates import JobState
from ota.records import ConflictPolicy, JobSpec, RetryRule, SuccessMode, TaskType
from ota.reports import HealthCheck
from ota.retry_rules import RULE_NAMES, retry_after_s
from workers.codec import jobs_of, pack, spec_ref, unpack
from workers.effects import EmitJobEvent, SendUpgrade
from workers.events import Event, Kind
from workers.machine import Outcome, step
from workers.model import Device, Job

from .helpers import DL_FINISHED, DL_STARTED, OFFLINE, ONLINE, TARGET, progress, spec, version

VERSIONS = st.sampled_from(["1.0", "1.5", TARGET, None])
TASKS = st.sampled_from(["t1", "t2", "t3"])
CAUSED = frozenset({JobState.FAILED, JobState.WAITING_RETRY})
TOKEN_LIFETIME_S = 600
RETRY_RULES = st.lists(
    st.builds(
        RetryRule,
        on=st.sampled_from(sorted(RULE_NAMES)),
        count=st.integers(0, 2),
        interval_s=st.integers(0, 60),
        factor=st.sampled_from([1.0, 2.0]),
    ),
    max_size=2,
).map(tuple)


def device_events() -> st.SearchStrategy[Event]:
    return st.one_of(
        st.just(ONLINE),
        st.just(OFFLINE),
        st.builds(lambda c: Event(Kind.ONLINE, connection=c), st.sampled_from(["c1", "c2"])),
        st.just(DL_STARTED),
        st.just(DL_FINISHED),
        st.just(Event(Kind.DOWNLOAD_STARTED, package_sha256="cd" * 32)),
        st.builds(
            lambda fw, sw, health: version(fw=fw, sw=sw, health=health),
            VERSIONS,
            VERSIONS,
            st.none() | st.sampled_from(HealthCheck),
        ),
        st.builds(lambda fw: Event(Kind.SDK_INFO, fw_version=fw), VERSIONS),
        st.builds(
            lambda code, pct, ver, echo, desc: progress(code, pct, ver or "1.0", echo, desc),
            st.sampled_from([0, 0, 0, 1, 2, 3, 5, 7, 10, 255]),
            st.none() | st.integers(0, 100),
            VERSIONS,
            st.none() | st.sampled_from(["w0-1-0", "dev-echo"]),
            st.none() | st.sampled_from(["downloading", "installing"]),
        ),
    )


CONFIRMATION_REPORTS = st.sampled_from(
    [
        progress(0, 100, TARGET),
        version(fw=TARGET),
        version(fw=TARGET, health=HealthCheck.PASSED),
        version(fw=TARGET, health=HealthCheck.FAILED),
        version(fw="1.0", health=HealthCheck.PASSED),
    ]
)


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.device = Device()
        self.now_ms = 1_000_000
        self.offset = 0
        self.history: list[Event] = []
        self.finished: dict[tuple[str, int], Job] = {}
        self.last: Outcome | None = None
        self.last_event: Event | None = None
        # The spec each (task, attempt) first started with: the one any job of it runs.
        self.specs: dict[tuple[str, int], JobSpec] = {}

    def apply(self, event: Event) -> None:
        self.offset += 1
        ref = f"w0-{self.offset}"
        before = self.device
        outcome = step(before, event, self.now_ms, ref, TOKEN_LIFETIME_S)
        assert step(before, event, self.now_ms, ref, TOKEN_LIFETIME_S) == outcome  # deterministic
        if self.repeats_presence(before, event):
            assert outcome == Outcome(before, ()), "a repeated online notice changed something"
        self.device, self.last, self.last_event = outcome.device, outcome, event
        self.history.append(event)
        self.check_events(outcome, event)
        self.check_upgrades(outcome)

    @staticmethod
    def repeats_presence(before: Device, event: Event) -> bool:
        """An online notice of the connection the device is known online with (or none)."""
        return (
            event.kind is Kind.ONLINE
            and before.online is True
            and event.connection in (None, before.connection)
        )

    def check_events(self, outcome: Outcome, event: Event) -> None:
        for effect in outcome.effects:
            if not isinstance(effect, EmitJobEvent):
                continue
            key = (effect.task_id, effect.attempt)
            if key in self.finished:
                assert effect.from_state == effect.to_state, f"finished {key} moved"
            moved = effect.from_state != effect.to_state
            confirmed = self.spec_running(outcome.device, key).success is SuccessMode.CONFIRMED
            if moved and effect.to_state in ("SUCCEEDED", "CONFIRMING"):
                assert effect.detail["version"] == TARGET
                reported = (
                    event.version
                    if event.kind is Kind.PROGRESS
                    else event.fw_version  # firmware task in these tests
                )
                assert reported == TARGET, "success without the target version reported"
            if moved and effect.to_state == "CONFIRMING":
                assert confirmed, "a reported task waited for a health verdict"
            if moved and effect.to_state == "SUCCEEDED" and confirmed:
                assert (event.kind, event.health_check) == (Kind.VERSION, HealthCheck.PASSED)
            if moved and effect.cause == FailureCause.HEALTH_CHECK_FAILED:
                assert (event.kind, event.health_check) == (Kind.VERSION, HealthCheck.FAILED)
            if moved and effect.cause == FailureCause.ROLLED_BACK:
                assert effect.from_state == "CONFIRMING"
            if moved and effect.cause == FailureCause.CONFIRM_TIMEOUT:
                assert (effect.from_state, event.kind) == ("CONFIRMING", Kind.TIMEOUT)
            if moved and effect.cause in (
                FailureCause.HEALTH_CHECK_FAILED,
                FailureCause.ROLLED_BACK,
            ):
                assert confirmed
            if effect.to_state in ("FAILED", "WAITING_RETRY"):
                assert effect.cause is not None
                FailureCause(effect.cause)
            elif effect.from_state != effect.to_state:
                assert effect.cause is None

    def spec_running(self, device: Device, key: tuple[str, int]) -> JobSpec:
        """The spec the machine runs for (task, attempt): the job's own where the device
        holds it (a start the machine ignored, e.g. while busy, did not replace it), else
        the first one that (task, attempt) started with."""
        for job in (device.job, *device.queue):
            if job is not None and (job.task_id, job.attempt) == key:
                return job.spec
        return self.specs[key]

    def check_upgrades(self, outcome: Outcome) -> None:
        """Every upgrade sent, first or again, carries a token minted now for the whole
        lifetime, under the current try's command id; the job keeps the last expiry."""
        sent = [e for e in outcome.effects if isinstance(e, SendUpgrade)]
        for upgrade in sent:
            assert upgrade.token_expires_s == self.now_ms // 1000 + TOKEN_LIFETIME_S
        if sent:
            job = outcome.device.job
            assert job is not None
            assert {u.id for u in sent} == {job.command_id}
            assert job.token_expires_s == sent[-1].token_expires_s

    @rule(event=device_events())
    def device_reports(self, event: Event) -> None:
        self.apply(event)

    @rule(
        task=TASKS,
        attempt=st.integers(1, 3),
        retries=st.integers(0, 2),
        wait=st.booleans(),
        require_online=st.booleans(),
        allowed=st.sampled_from([(), ("1.0",)]),
        rules=RETRY_RULES,
        confirmed=st.booleans(),
    )
    def job_start(
        self,
        task: str,
        attempt: int,
        retries: int,
        wait: bool,
        require_online: bool,
        allowed: tuple[str, ...],
        rules: tuple[RetryRule, ...],
        confirmed: bool,
    ) -> None:
        policy = ConflictPolicy.WAIT if wait else ConflictPolicy.FAIL
        job_spec = spec(
            task,
            task_type=TaskType.FIRMWARE,
            retry_count=retries,
            on_conflict=policy,
            require_online=require_online,
            allowed=allowed,
        )
        success = SuccessMode.CONFIRMED if confirmed else SuccessMode.REPORTED
        job_spec = replace(job_spec, retry_rules=rules, success=success)
        self.specs.setdefault((task, attempt), job_spec)
        self.apply(Event(Kind.START, spec=job_spec, attempt=attempt))

    @rule(event=CONFIRMATION_REPORTS)
    def confirmation_reports(self, event: Event) -> None:
        """Reports of the target and verdicts on it: often enough that confirmed jobs
        reach CONFIRMING and leave it every way."""
        self.apply(event)

    @rule(task=TASKS)
    def cancel(self, task: str) -> None:
        self.apply(Event(Kind.CANCEL, task_id=task))

    @precondition(lambda self: self.device.deadline_ms is not None)
    @rule(late_ms=st.integers(0, 10_000))
    def due_timeout(self, late_ms: int) -> None:
        for job in (self.device.job, *self.device.queue):
            if job is None or job.deadline_ms is None:
                continue
            if job.deadline_ms == self.device.deadline_ms:
                self.now_ms = max(self.now_ms, job.deadline_ms + late_ms)
                self.apply(Event(Kind.TIMEOUT, task_id=job.task_id, job_version=job.version))
                return

    @rule(task=TASKS, job_version=st.integers(0, 30))
    def stray_timeout(self, task: str, job_version: int) -> None:
        self.apply(Event(Kind.TIMEOUT, task_id=task, job_version=job_version))

    @precondition(lambda self: bool(self.history))
    @rule(back=st.integers(1, 5))
    def duplicate_or_reordered(self, back: int) -> None:
        """Re-apply an earlier event: a duplicate, or (further back) one out of order."""
        self.apply(self.history[-min(back, len(self.history))])

    @rule(jump_ms=st.integers(-60_000, 3_600_000))
    def clock_jump(self, jump_ms: int) -> None:
        self.now_ms = max(0, self.now_ms + jump_ms)

    @invariant()
    def finished_jobs_never_change(self) -> None:
        for job in (self.device.job, *self.device.queue):
            if job is None:
                continue
            key = (job.task_id, job.attempt)
            if key in self.finished:
                assert job == self.finished[key]
            elif job.state.terminal:
                self.finished[key] = job

    @invariant()
    def deadlines_exactly_on_unfinished_jobs(self) -> None:
        for job in (self.device.job, *self.device.queue):
            if job is not None:
                assert (job.deadline_ms is None) == job.state.terminal, job

    @invariant()
    def one_cause_exactly_when_failing(self) -> None:
        for job in (self.device.job, *self.device.queue):
            if job is not None:
                assert (job.cause is not None) == (job.state in CAUSED), job

    @invariant()
    def retries_only_as_the_rules_allow(self) -> None:
        for job in (self.device.job, *self.device.queue):
            if job is None:
                continue
            counts = [job.spec.retry_count, *(r.count for r in job.spec.retry_rules)]
            assert job.tries <= max(counts), job
            if job.state is JobState.WAITING_RETRY:
                assert job.cause is not None
                assert retry_after_s(job.spec, job.cause, job.tries) is not None, job

    @invariant()
    def at_most_one_active_job_and_queue_only_behind_it(self) -> None:
        if self.device.queue:
            assert self.device.job is not None
            assert not self.device.job.state.terminal
            assert all(q.state is JobState.QUEUED for q in self.device.queue)

    @invariant()
    def stored_form_round_trips(self) -> None:
        specs = {spec_ref(job.spec).digest: job.spec for job in jobs_of(self.device)}
        assert unpack(pack(self.device), specs) == self.device


JobMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestJobMachine = JobMachine.TestCase
