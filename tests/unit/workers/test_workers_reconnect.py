"""A device that reconnects without an offline notice (the broker crashed) gets what it is
waiting for: an online notice naming another connection counts as a reconnect, the same
connection again changes nothing. After the command every reconnect also asks the device's
version, and a version report of the target ends the job (its result was lost)."""

from __future__ import annotations

import pytest

from ota.jobstates import JobState as S
from ota.records import PresenceRecord, TaskType
from workers.codec import pack, spec_ref, unpack
from workers.effects import SendUpgrade, SendVersionQuery
from workers.events import Event, Kind, event_from_record
from workers.machine import step
from workers.model import Device

from .helpers import (
    DL_FINISHED,
    DL_STARTED,
    OFFLINE,
    ONLINE,
    TARGET,
    Runner,
    commands,
    events,
    notes,
    progress,
    spec,
    start,
    timeout_of,
    transitions,
    version,
)

T0 = 1_000_000


def online(connection: str | None) -> Event:
    return Event(Kind.ONLINE, connection=connection)


def connected_at(state: S) -> Runner:
    """A job in `state` on a device online with connection "c1"."""
    run = Runner(Device(), T0)
    run(online("c1"))
    run(start())
    for event in {
        S.QUERYING_VERSION: [],
        S.COMMAND_SENT: [version(fw="1.0")],
        S.DOWNLOADING: [version(fw="1.0"), DL_STARTED],
        S.DOWNLOADED: [version(fw="1.0"), DL_STARTED, DL_FINISHED],
        S.UPDATING: [version(fw="1.0"), DL_STARTED, DL_FINISHED, progress(0, 50)],
    }.get(state, [version(fw="1.0"), DL_STARTED, DL_FINISHED, progress(0, 50)]):
        run(event)
    if state is S.VERIFYING:
        run.timeout()
    assert run.state is state
    assert run.device.connection == "c1"
    return run


def test_reconnect_while_querying_resends_the_query_with_a_fresh_window() -> None:
    run = connected_at(S.QUERYING_VERSION)
    before = run.job
    run.now_ms += 5_000
    out = run(online("c2"))
    assert [type(c) for c in commands(out)] == [SendVersionQuery]
    assert notes(out) == ["query_resent"]
    assert run.job.state is S.QUERYING_VERSION
    assert run.job.version == before.version + 1
    assert run.job.deadline_ms == run.now_ms + run.job.spec.windows.version_s * 1000
    assert run.device.connection == "c2"
    # The timeout set for the old window no longer applies.
    stale = run(Event(Kind.TIMEOUT, task_id=before.task_id, job_version=before.version), 10**12)
    assert stale.effects == ()
    assert run.job.state is S.QUERYING_VERSION


def test_reconnect_after_the_command_resends_it_under_the_same_id_with_a_fresh_token() -> None:
    run = connected_at(S.COMMAND_SENT)
    first = run.job
    assert run.last is not None  # the version answer that sent the command
    [sent] = [c for c in commands(run.last) if isinstance(c, SendUpgrade)]
    run.now_ms += 60_000
    out = run(online("c2"))
    resent, asked = commands(out)
    assert isinstance(resent, SendUpgrade)
    assert isinstance(asked, SendVersionQuery)
    assert resent.id == sent.id == first.command_id
    assert resent.token_expires_s == sent.token_expires_s + 60
    assert notes(out) == ["command_resent"]
    # The job is the same try: same command, same time it went out, same deadline; it
    # keeps when the new token expires.
    assert run.job == first._replace(token_expires_s=resent.token_expires_s)


def test_the_answer_to_the_first_command_counts_after_the_resend() -> None:
    """A device that got the first command before the crash answers it, echoing its id;
    the resend (same id) does not make that answer stale."""
    run = connected_at(S.COMMAND_SENT)
    first_id = run.job.command_id
    run(online("c2"))
    answered = run(progress(0, 10, echo=first_id))
    assert transitions(answered) == [(S.COMMAND_SENT.value, S.DOWNLOADING.value)]
    finished = run(progress(0, 100, ver=TARGET, echo=first_id))
    assert transitions(finished) == [(S.DOWNLOADING.value, S.SUCCEEDED.value)]


def test_reconnect_during_the_last_query_resends_it() -> None:
    run = connected_at(S.VERIFYING)
    out = run(online("c2"))
    assert [type(c) for c in commands(out)] == [SendVersionQuery]
    assert run.job.deadline_ms == run.now_ms + run.job.spec.windows.verify_s * 1000


@pytest.mark.parametrize(
    "state", [S.QUERYING_VERSION, S.COMMAND_SENT, S.DOWNLOADING, S.UPDATING, S.VERIFYING]
)
def test_a_repeated_notice_of_the_same_connection_changes_nothing(state: S) -> None:
    run = connected_at(state)
    before = run.device
    for event in (online("c1"), ONLINE):  # the same connection; an uplink's presence
        assert run(event).effects == ()
        assert run.device == before


def test_reconnect_mid_download_after_the_token_ran_out_resends_with_a_fresh_one() -> None:
    """A device back from a long absence mid-download: its token expired, so the upgrade
    goes again under the same id with a fresh token, then the version query. The job
    stays as it was (state, version, deadline), but for the token's expiry."""
    run = connected_at(S.DOWNLOADING)
    job = run.job
    run.now_ms += 86_400_000
    out = run(online("c2"))
    resent, asked = commands(out)
    assert isinstance(resent, SendUpgrade)
    assert isinstance(asked, SendVersionQuery)
    assert resent.id == job.command_id
    assert resent.token_expires_s == run.now_ms // 1000 + 86_400
    assert notes(out) == ["token_renewed"]
    [renewed] = events(out)
    assert renewed.detail["by"] == "reconnect"
    assert run.job == job._replace(token_expires_s=resent.token_expires_s)


@pytest.mark.parametrize("state", [S.DOWNLOADING, S.DOWNLOADED, S.UPDATING])
def test_reconnect_during_the_download_or_update_asks_the_version(state: S) -> None:
    """Reports the device sent around the crash may be lost: a version query finds out
    whether it already upgraded. A device mid-download has the command, and its token
    still lasts: no new URL. The job stays as it was (state, version, deadline)."""
    run = connected_at(state)
    job = run.job
    out = run(online("c2"))
    assert [type(c) for c in commands(out)] == [SendVersionQuery]
    assert notes(out) == ["reconnect_query"]
    assert run.job == job
    assert run.device.connection == "c2"


POST_COMMAND = [S.COMMAND_SENT, S.DOWNLOADING, S.DOWNLOADED, S.UPDATING]


@pytest.mark.parametrize("state", POST_COMMAND)
def test_a_duplicate_notice_of_the_reconnect_sends_nothing_more(state: S) -> None:
    run = connected_at(state)
    assert commands(run(online("c2")))
    job = run.job
    assert run(online("c2")).effects == ()
    assert run.job == job


@pytest.mark.parametrize("state", POST_COMMAND)
def test_a_redelivered_reconnect_notice_sends_the_same_ids(state: S) -> None:
    """Effect ids come from the notice's place in the log: applying it again (a replay after
    Redis lost its last writes) produces the same records, which consumers deduplicate."""
    run = connected_at(state)
    before = run.device
    first = step(before, online("c2"), run.now_ms, "w0-77")
    again = step(before, online("c2"), run.now_ms, "w0-77")
    assert first == again
    assert [c.id for c in commands(first)][-1] == "w0-77-" + str(len(first.effects) - 1)


@pytest.mark.parametrize("state", POST_COMMAND)
def test_the_target_version_after_the_command_succeeds(state: S) -> None:
    run = connected_at(state)
    run(online("c2"))
    out = run(version(fw=TARGET))
    assert transitions(out) == [(state.value, S.SUCCEEDED.value)]
    [moved] = events(out)
    assert moved.detail == {"version": TARGET, "by": "version_report"}
    assert run.job.deadline_ms is None


@pytest.mark.parametrize("state", POST_COMMAND)
def test_another_version_after_the_command_leaves_the_state_to_its_own_rules(state: S) -> None:
    """A device mid-download or mid-install still runs the old version; a report without
    the task's component (sw only for a firmware task) says nothing either."""
    run = connected_at(state)
    run(online("c2"))
    job = run.job
    for report in (version(fw="1.0"), version(sw=TARGET), version()):
        assert run(report).effects == ()
    assert run.job == job
    # The state's window still runs: its timeout is the one set before the reconnect.
    run.timeout()
    assert run.state is not state


def test_a_software_task_compares_sw_version() -> None:
    run = Runner(Device(), T0)
    run(online("c1"))
    run(start(spec(task_type=TaskType.SOFTWARE)))
    run(version(sw="1.0"))
    run(DL_STARTED)
    assert run.state is S.DOWNLOADING
    assert run(version(fw=TARGET, sw="1.0")).effects == ()
    run(version(sw=TARGET))
    assert run.job.state is S.SUCCEEDED


def test_a_lost_result_is_found_by_the_reconnect_query() -> None:
    """The device installed and reported its result to the broker that crashed: the job is
    still DOWNLOADED. Its reconnect asks the version, the answer ends the job."""
    run = connected_at(S.DOWNLOADED)
    out = run(online("c2"))
    [asked] = commands(out)
    answered = run(Event(Kind.VERSION, fw_version=TARGET, device_event_id=asked.id))
    assert transitions(answered) == [(S.DOWNLOADED.value, S.SUCCEEDED.value)]
    # The result, if it arrives after all, is only noted.
    late = run(progress(0, 100, ver=TARGET, echo=run.job.command_id))
    assert notes(late) == ["late_report"]
    assert run.job.state is S.SUCCEEDED


def test_offline_forgets_the_connection_and_coming_back_resends() -> None:
    run = connected_at(S.COMMAND_SENT)
    run(OFFLINE)
    assert run.device.connection is None
    out = run(online("c1"))  # even the same identity: the device was offline
    assert [type(c) for c in commands(out)] == [SendUpgrade, SendVersionQuery]


def test_a_device_known_online_from_its_traffic_learns_its_connection_without_a_resend() -> None:
    """Its first report reached the inbox before the broker's online notice: the notice
    names the connection that report came on, not a new one."""
    run = Runner(Device(online=True), T0)
    run(start())
    assert run.device.connection is None
    run(version("1.0"))  # the query's answer: the upgrade goes out
    assert run.job.state is S.COMMAND_SENT
    assert run(online("c9")).effects == ()
    assert run.device.connection == "c9"
    reconnect = commands(run(online("c10")))
    assert [type(c) for c in reconnect] == [SendUpgrade, SendVersionQuery]


def test_connection_comes_from_the_presence_record_and_is_stored() -> None:
    record = PresenceRecord(device_id="d", online=True, connection="1765000000123")
    assert event_from_record(record) == Event(Kind.ONLINE, connection="1765000000123")
    assert event_from_record(PresenceRecord(device_id="d", online=False)) == OFFLINE
    run = connected_at(S.COMMAND_SENT)
    specs = {spec_ref(run.job.spec).digest: run.job.spec}
    assert unpack(pack(run.device), specs) == run.device
    assert unpack(pack(Device(online=True)), {}) == Device(online=True)


def test_timeout_of_the_refreshed_query_still_fails_it() -> None:
    run = connected_at(S.QUERYING_VERSION)
    run(online("c2"))
    run(timeout_of(run.device), run.job.deadline_ms)
    assert run.job.state is S.FAILED
