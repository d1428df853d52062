"""Batched job-event and inbox application against the real Redis: a batch with
duplicates and stale events inside it counts each transition once, and the same batch
applied again (redelivery after a crash before the commit) changes nothing."""

from __future__ import annotations

import uuid
from dataclasses import replace
from itertools import pairwise

import orjson
import pytest
import redis
import redis.asyncio

from ota.clock import now_ms
from ota.records import DeviceEventRecord, JobEventRecord, PresenceRecord, TaskType
from scheduler import keys, taskstate, timeline
from scheduler.devices import Registry
from scheduler.taskstate import TaskState, Transition
from tests.integration.scheduler.conftest import ON_BOTH

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


async def test_a_batch_counts_each_transition_once_even_when_redelivered(
    aredis: redis.asyncio.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskstate, "APPLY_CHUNK", 2)  # chunk boundaries inside the batch
    tid = f"t-{uuid.uuid4().hex[:8]}"
    await aredis.hset(
        keys.task_devices(tid), mapping=dict.fromkeys(("d1", "d2", "d3"), "RELEASED|1|0||0")
    )
    await aredis.hset(keys.task_counts(tid), mapping={"s:RELEASED": 3, "w0:active": 3})
    batch = [
        Transition("d1", 1, 2, "DOWNLOADING", None),
        Transition("d1", 1, 5, "SUCCEEDED", None),
        Transition("d2", 1, 3, "FAILED", 28),
        Transition("d1", 1, 2, "DOWNLOADING", None),  # a duplicate, now older than the entry
        Transition("d3", 1, 1, "UPDATING", None),
        Transition("ghost", 1, 1, "UPDATING", None),  # not a device of this task
    ]
    state = TaskState(aredis)
    assert await state.apply(tid, batch) == [1, 2, 2, 0, 1, 0]
    expected = {
        "s:RELEASED": 0,
        "s:DOWNLOADING": 0,
        "s:SUCCEEDED": 1,
        "s:FAILED": 1,
        "s:UPDATING": 1,
        "c:28": 1,
        "w0:active": 1,
        "w0:succeeded": 1,
        "w0:failed": 1,
    }
    assert await state.counts(tid) == expected
    # Again: nothing changes; the two terminal events are told apart as redeliveries (their
    # notifications go again, with the same ids).
    again = taskstate.TERMINAL_AGAIN
    assert await state.apply(tid, batch) == [0, again, again, 0, 0, 0]
    assert await state.counts(tid) == expected
    assert await aredis.hget(keys.task_devices(tid), "d1") == b"SUCCEEDED|1|5||0"
    assert await aredis.zrange(keys.task_state_index(tid, "FAILED"), 0, -1) == [b"d2"]


async def test_registry_batches_keep_log_order_and_store_a_replay_once(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    device, tid = f"dev-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    events = [
        JobEventRecord(device, tid, 1, v, "QUEUED", state, at_ms=1000 - v)  # stamps go back
        for v, state in enumerate(("COMMAND_SENT", "DOWNLOADING", "SUCCEEDED"), start=1)
    ]
    batch = [(e, TaskType.SOFTWARE.value) for e in events]
    await registry.job_events(batch)
    await registry.job_events(batch)  # redelivered
    stored = await aredis.lrange(keys.timeline(device), 0, -1)  # newest first
    assert [e["to"] for e in timeline.decode_all(stored)] == [
        "SUCCEEDED",
        "DOWNLOADING",
        "COMMAND_SENT",
    ]
    current = await aredis.hmget(keys.device(device), ["state", "job_version", "task_type"])
    assert current == [b"SUCCEEDED", b"3", b"software"]

    # A progress report's version belongs to the current job's kind (software here); an
    # older presence change in the same batch does not undo a newer one.
    await registry.observe(
        [
            PresenceRecord(device_id=device, online=True, at_ms=2000),
            DeviceEventRecord(
                device_id=device,
                event_type="upgrade_progress_report",
                paras={"result_code": 0, "progress": 40, "version": "2.0"},
                at_ms=2001,
            ),
            PresenceRecord(device_id=device, online=False, at_ms=1500),
        ]
    )
    fields = await aredis.hmget(keys.device(device), ["online", "sw", "fw", "seen_ms"])
    assert fields == [b"1", b"2.0", None, b"2001"]
    assert await aredis.sismember(keys.ONLINE, device)
    assert await aredis.sismember(keys.version("sw", "2.0"), device)


async def test_batched_arguments_keep_every_character(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    """Batches reach the scripts as one JSON argument: what is stored is byte for byte what
    separate arguments would have stored (a replay must find its timeline entry again)."""
    device = f'dev-"ü\\{uuid.uuid4().hex[:6]}'
    event = JobEventRecord(
        device,
        "t-odd",
        1,
        1,
        "QUEUED",
        "DOWNLOADING",
        detail={"note": 'line\nbreak "quoted" \u2603 \x01'},
        at_ms=1_795_000_000_123,
    )
    await registry.job_events([(event, "")])
    await registry.job_events([(event, "")])
    assert await aredis.lrange(keys.timeline(device), 0, -1) == [timeline.encode(event)]
    assert await aredis.hget(keys.device(device), "job_at_ms") == b"1795000000123"
    await registry.observe(
        [DeviceEventRecord(device, "version_report", {"fw_version": "1.0 \u00df"}, at_ms=5)]
    )
    assert await aredis.hget(keys.device(device), "fw") == "1.0 \u00df".encode()
    assert await aredis.zscore(keys.DEVICES, device) == 0


async def test_a_result_reaches_the_notification_stream_once_however_often_applied(
    aredis: redis.asyncio.Redis[bytes],
) -> None:
    tid = f"t-{uuid.uuid4().hex[:8]}"
    await aredis.hset(keys.task_devices(tid), "d1", "RELEASED|1|0||0")
    await aredis.hset(keys.task_counts(tid), mapping={"s:RELEASED": 1, "w0:active": 1})
    note = f'{{"id":"{tid}-note","kind":"device_result"}}'
    batch = [Transition("d1", 1, 1, "DOWNLOADING", None), Transition("d1", 1, 2, "SUCCEEDED", None)]
    state = TaskState(aredis)
    assert await state.apply(tid, batch, ["", note]) == [taskstate.APPLIED, taskstate.TERMINAL]
    # Redelivered, or replayed after a crash: the state and the stream stay as they are.
    assert await state.apply(tid, batch, ["", note]) == [0, taskstate.TERMINAL_AGAIN]
    entries = await aredis.xrevrange(keys.NOTIFY_STREAM, count=1000)
    assert [e for _, e in entries if e[b"body"] == note.encode()] == [{b"body": note.encode()}]


@pytest.mark.parametrize("timeline_cap", [3])
async def test_the_timeline_keeps_the_newest_entries_and_says_where_the_rest_are(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    """Only the cap's newest entries stay in Redis; the device shows how many were trimmed
    and the log position of its first job event, where the full history is read. A
    redelivered batch trims nothing more and keeps the first position."""
    device, tid = f"dev-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    states = ("QUEUED", "COMMAND_SENT", "DOWNLOADING", "DOWNLOADED", "UPDATING", "FAILED")
    events = [
        JobEventRecord(device, tid, 1, v, before, after, at_ms=1000 + v)
        for v, (before, after) in enumerate(zip(("PENDING", *states), states, strict=False))
    ]
    positions = [f"4/{100 + i}" for i in range(len(events))]
    await registry.job_events([(e, "") for e in events[:4]], positions[:4])
    await registry.job_events([(e, "") for e in events[4:]], positions[4:])
    shown = await registry.show(device)
    assert [e["to"] for e in shown["timeline"]] == ["FAILED", "UPDATING", "DOWNLOADED"]
    assert shown["timeline"][0] == timeline.decode(timeline.encode(events[-1]))
    assert shown["history"]["topic"].endswith("ota.job-events")  # the registry's prefixed one
    assert shown["history"] | {"topic": ""} == {
        "topic": "",
        "partition": 4,
        "first_offset": 100,
        "trimmed": 3,
        "expired": False,
    }
    assert shown["current_job"]["state"] == "FAILED"
    assert {e["task_id"] for e in shown["timeline"]} == {tid}
    # The entries above leave the task out; the oldest kept one, trimmed to, names it.
    stored = await aredis.lrange(keys.timeline(device), 0, -1)
    forms = [timeline.forms(e) for e in events[-1:-4:-1]]
    assert stored == [forms[0][1], forms[1][1], forms[2][0]]
    await registry.job_events([(e, "") for e in events[3:]], positions[3:])  # redelivered
    assert (await registry.show(device))["history"] == shown["history"]
    assert await aredis.lrange(keys.timeline(device), 0, -1) == stored


async def test_a_succeeded_try_is_folded_into_its_result(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    """A try that succeeds becomes one entry: its result with the earlier entries of the
    same task and attempt as steps (an earlier attempt and another task's entries stay
    whole). Its events again, or a download fact after the result, change nothing."""
    device, tid = f"dev-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"

    def job(task: str, attempt: int, v: int, before: str, after: str) -> JobEventRecord:
        return JobEventRecord(device, task, attempt, v, before, after, at_ms=1000 + 10 * v)

    other = job("t-other", 1, 1, "QUEUED", "FAILED")
    failed = [job(tid, 1, 2, "QUEUED", "COMMAND_SENT"), job(tid, 1, 3, "COMMAND_SENT", "FAILED")]
    moves = ("QUEUED", "COMMAND_SENT", "DOWNLOADING", "DOWNLOADED", "UPDATING", "SUCCEEDED")
    second = [job(tid, 2, 3 + v, a, b) for v, (a, b) in enumerate(pairwise(moves), 1)]
    second[2] = replace(second[2], cause=22)  # a step's cause is kept
    events = [other, *failed, *second]
    await registry.job_events([(e, "") for e in events])
    stored = await aredis.lrange(keys.timeline(device), 0, -1)
    assert len(stored) == 4  # the summary, the failed attempt's two, the other task's one
    assert stored[0].endswith(b"]]")  # a summary
    assert stored[0].startswith(b'["' + tid.encode())
    shown = await registry.show(device)
    whole = [timeline.decode(timeline.encode(e)) for e in reversed(events)]
    assert (
        shown["timeline"]
        == [whole[0]] + [e | {"id": None, "detail": {}} for e in whole[1:5]] + whole[5:]
    )
    assert shown["current_job"]["state"] == "SUCCEEDED"
    assert await aredis.hget(keys.device(device), "tl_close") is None
    unfolded = sum(len(timeline.forms(e)[1]) for e in second)
    assert len(stored[0]) < 0.6 * unfolded

    late = replace(job(tid, 2, 9, "SUCCEEDED", "DOWNLOADED"), detail={"before_result": True})
    await registry.job_events([(e, "") for e in [*events, late]])  # redelivered, and late
    assert await aredis.lrange(keys.timeline(device), 0, -1) == stored
    # The next try of the same task goes on top of the summary, its task left out.
    retried = job(tid, 3, 20, "QUEUED", "COMMAND_SENT")
    await registry.job_events([(retried, "")])
    assert await aredis.lindex(keys.timeline(device), 0) == timeline.forms(retried)[1]
    # The folded try's events again, behind a later try of its task and then behind
    # another task's, still change nothing.
    for newer in ([], [JobEventRecord(device, "t-next", 1, 1, "PENDING", "QUEUED", at_ms=9000)]):
        await registry.job_events([(e, "") for e in newer])
        now_stored = await aredis.lrange(keys.timeline(device), 0, -1)
        await registry.job_events([(e, "") for e in [*second, late]])
        assert await aredis.lrange(keys.timeline(device), 0, -1) == now_stored


@pytest.mark.parametrize("timeline_retention_ms", [60_000])
async def test_a_timeline_expires_its_retention_after_its_newest_entry(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    """The timeline lives until the newest entry's stamp plus the retention (a replayed
    older event does not shorten it); one past its retention is gone at once while the
    device keeps its last job, and the history then says older entries expired."""
    now, tid = now_ms(), f"t-{uuid.uuid4().hex[:8]}"
    recent, old = f"dev-{uuid.uuid4().hex[:8]}", f"dev-{uuid.uuid4().hex[:8]}"

    def job(device: str, version: int, state: str, at_ms: int) -> JobEventRecord:
        return JobEventRecord(device, tid, 1, version, "QUEUED", state, at_ms=at_ms)

    first, newest = job(recent, 1, "COMMAND_SENT", now - 5000), job(recent, 2, "UPDATING", now)
    await registry.job_events([(first, ""), (newest, "")], ["2/10", "2/11"])
    await registry.job_events([(first, "")], ["2/10"])  # redelivered: older than the newest
    assert await aredis.pexpiretime(keys.timeline(recent)) == now + 60_000
    assert (await registry.show(recent))["history"]["expired"] is False

    await registry.job_events([(job(old, 1, "SUCCEEDED", now - 61_000), "")], ["2/12"])
    assert not await aredis.exists(keys.timeline(old))
    shown = await registry.show(old)
    assert shown["timeline"] == []
    assert shown["history"]["expired"] is True
    assert shown["current_job"]["state"] == "SUCCEEDED"
    # A later job starts a new timeline; the history still says older entries expired.
    later = JobEventRecord(old, "t-next", 1, 1, "PENDING", "QUEUED", at_ms=now)
    await registry.job_events([(later, "")], ["2/13"])
    shown = await registry.show(old)
    assert [e["task_id"] for e in shown["timeline"]] == ["t-next"]
    assert shown["history"]["expired"] is True


async def test_positions_must_match_the_events(registry: Registry) -> None:
    event = JobEventRecord("d-x", "t-x", 1, 1, "QUEUED", "QUEUED", at_ms=1)
    with pytest.raises(ValueError, match="2 log positions for 1 job events"):
        await registry.job_events([(event, "")], ["0/1", "0/2"])


def event(device: str, version: int, before: str, after: str, **detail: object) -> JobEventRecord:
    return JobEventRecord(device, "t-late", 1, version, before, after, detail=detail, at_ms=9)


@pytest.mark.parametrize(
    "late_order", [("DOWNLOADING", "DOWNLOADED"), ("DOWNLOADED", "DOWNLOADING")]
)
async def test_download_facts_after_the_result_go_below_it(
    registry: Registry, late_order: tuple[str, str]
) -> None:
    """Download facts that reached the log after the try's result are shown before the
    result (DOWNLOADING below DOWNLOADED, in whichever order they came); a note after
    them goes on top; the same facts again change nothing."""
    device = f"dev-{uuid.uuid4().hex[:8]}"
    sent = event(device, 1, "QUEUED", "COMMAND_SENT")
    failed = event(device, 2, "COMMAND_SENT", "FAILED")
    late = [event(device, 2, "FAILED", state, before_result=True) for state in late_order]
    note = event(device, 2, "FAILED", "FAILED", note="late_report")
    for batch in ([sent, failed], late[:1], late[1:], [note], late):
        await registry.job_events([(e, "") for e in batch])
    shown = await registry.show(device)
    assert [(e["from"], e["to"]) for e in shown["timeline"]] == [
        ("FAILED", "FAILED"),
        ("COMMAND_SENT", "FAILED"),
        ("FAILED", "DOWNLOADED"),
        ("FAILED", "DOWNLOADING"),
        ("QUEUED", "COMMAND_SENT"),
    ]
    assert shown["current_job"]["state"] == "FAILED"


async def test_a_timeline_stored_as_a_sorted_set_is_read_and_turned_into_the_list(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    """A device whose timeline is still the sorted set of whole objects (as stored
    before): shown as it was; the next job event turns it into the list, the new entry on
    top, and a late download fact still finds the old result to go below."""
    device = f"dev-{uuid.uuid4().hex[:8]}"
    sent = event(device, 1, "QUEUED", "COMMAND_SENT")
    failed = event(device, 2, "COMMAND_SENT", "FAILED")
    objects = [orjson.dumps(timeline.decode(timeline.encode(e))) for e in (sent, failed)]
    await aredis.zadd(keys.timeline(device), {o: 100 + i for i, o in enumerate(objects)})
    hashed: dict[str | bytes, str | int] = {
        "task": "t-late",
        "attempt": 1,
        "job_version": 2,
        "state": "FAILED",
    }
    await aredis.hset(
        keys.device(device), mapping=hashed | {"tl_close": "t-late|1|2", "tl_close_at": 101}
    )
    before = await registry.show(device)
    assert [e["to"] for e in before["timeline"]] == ["FAILED", "COMMAND_SENT"]
    late = event(device, 2, "FAILED", "DOWNLOADED", before_result=True)
    await registry.job_events([(late, "")])
    assert await aredis.type(keys.timeline(device)) == b"list"  # type: ignore[no-untyped-call]
    after = await registry.show(device)
    assert [e["to"] for e in after["timeline"]] == ["FAILED", "DOWNLOADED", "COMMAND_SENT"]
    assert after["timeline"][0] == before["timeline"][0]
    assert await aredis.hget(keys.device(device), "tl_close_at") is None


async def test_a_late_fact_finds_a_result_stored_with_state_names(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    """Entries written with state names (before the codes) still place a late download
    fact below their try's result."""
    device = f"dev-{uuid.uuid4().hex[:8]}"
    named = [
        orjson.dumps([e.id, 9, "t-late", 1, e.job_version, e.from_state, e.to_state])
        for e in (
            event(device, 2, "COMMAND_SENT", "FAILED"),
            event(device, 1, "QUEUED", "COMMAND_SENT"),
        )
    ]
    await aredis.rpush(keys.timeline(device), *named)
    await aredis.hset(keys.device(device), mapping={"task": "t-late", "tl_close": "t-late|1|2"})
    late = event(device, 2, "FAILED", "DOWNLOADING", before_result=True)
    await registry.job_events([(late, "")])
    shown = await registry.show(device)
    assert [e["to"] for e in shown["timeline"]] == ["FAILED", "DOWNLOADING", "COMMAND_SENT"]
    assert shown["timeline"][1] == timeline.decode(timeline.encode(late))
    # Between two entries of its task, the fact leaves the task out.
    assert (await aredis.lindex(keys.timeline(device), 1)) == timeline.forms(late)[1]


@pytest.mark.parametrize("timeline_cap", [4])
async def test_entries_name_their_task_where_the_task_changes(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    """Entries of two tasks in turn (a queued task's notes between the active one's
    moves): each entry whose older neighbour is of another task names its own, and the
    device shows every entry with its task, before and after trimming."""
    device = f"dev-{uuid.uuid4().hex[:8]}"
    a, b = f"t-a-{uuid.uuid4().hex[:6]}", f"t-b-{uuid.uuid4().hex[:6]}"
    steps = [
        JobEventRecord(device, a, 1, 1, "QUEUED", "COMMAND_SENT", at_ms=10),
        JobEventRecord(device, a, 1, 2, "COMMAND_SENT", "DOWNLOADING", at_ms=11),
        JobEventRecord(device, b, 1, 1, "QUEUED", "QUEUED", detail={"note": "queued"}, at_ms=12),
        JobEventRecord(device, a, 1, 3, "DOWNLOADING", "SUCCEEDED", at_ms=13),
        JobEventRecord(device, b, 1, 2, "QUEUED", "COMMAND_SENT", at_ms=14),
        JobEventRecord(device, b, 1, 3, "COMMAND_SENT", "FAILED", 28, at_ms=15),
    ]
    await registry.job_events([(e, "") for e in steps[:4]])
    shown = (await registry.show(device))["timeline"]
    assert shown == [timeline.decode(timeline.encode(e)) for e in reversed(steps[:4])]
    full = [timeline.forms(e)[0] for e in steps]
    short = [timeline.forms(e)[1] for e in steps]
    stored = await aredis.lrange(keys.timeline(device), 0, -1)
    assert stored == [full[3], full[2], short[1], full[0]]
    await registry.job_events([(e, "") for e in steps[4:]])
    await registry.job_events([(e, "") for e in steps])  # redelivered: nothing changes
    shown = (await registry.show(device))["timeline"]
    assert shown == [timeline.decode(timeline.encode(e)) for e in reversed(steps[2:])]
    stored = await aredis.lrange(keys.timeline(device), 0, -1)
    assert stored == [short[5], full[4], full[3], full[2]]
