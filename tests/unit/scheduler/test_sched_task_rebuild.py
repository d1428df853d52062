"""Rebuilding a task's states from its list and its devices' newest job events, and
reassembling recorded lists (scheduler/task_rebuild.py, scheduler/task_lists.py)."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.structs import OffsetAndTimestamp, TopicPartition

from ota.records import JobEventRecord
from scheduler.notify import device_result_event
from scheduler.task_lists import CHUNK_IDS, Recorded, assemble, chunk_key, chunks
from scheduler.task_rebuild import Latest, kept_since, rebuild, results_since
from scheduler.taskstate import bucket

STATE_NAMES = ("QUEUED", "DOWNLOADING", "SUCCEEDED", "FAILED", "CANCELLED", "WAITING_RETRY")


def test_entries_waves_counts_and_cursor() -> None:
    devices = ["a", "b", "c", "d", "e", "f"]
    latest = {
        "a": Latest(1, 4, "SUCCEEDED", None),
        "b": Latest(1, 3, "FAILED", 7),
        "c": Latest(2, 1, "DOWNLOADING", None),
        "e": Latest(1, 2, "QUEUED", None),  # released with d, whose first event is not in yet
    }
    built = rebuild(devices, latest, ends=[2, 6])
    assert built.entries == {
        "a": "SUCCEEDED|1|4||0",
        "b": "FAILED|1|3|7|0",
        "c": "DOWNLOADING|2|1||1",
        "e": "QUEUED|1|2||1",
    }
    assert built.counts == {
        "s:SUCCEEDED": 1,
        "s:FAILED": 1,
        "c:7": 1,
        "w0:succeeded": 1,
        "w0:failed": 1,
        "s:DOWNLOADING": 1,
        "s:QUEUED": 1,
        "w1:active": 2,
        "s:PENDING": 2,
    }
    assert (built.cursor, built.wave) == (3, 1)  # d is released again; e is skipped


def test_a_task_not_started_and_one_fully_released() -> None:
    assert rebuild(["a", "b"], {}, ends=[1, 2]).cursor == 0
    assert rebuild(["a", "b"], {}, ends=[1, 2]).wave == 0
    done = {d: Latest(1, 1, "SUCCEEDED", None) for d in ("a", "b")}
    built = rebuild(["a", "b"], done, ends=[1, 2])
    assert (built.cursor, built.wave) == (2, 1)
    # A wave fully released stays the current one, so the pacer judges it.
    assert rebuild(["a", "b"], {"a": done["a"]}, ends=[1, 2]).wave == 0


def test_newer_than_orders_by_attempt_then_job_version() -> None:
    assert Latest(2, 1, "QUEUED", None).newer_than(Latest(1, 9, "FAILED", 3))
    assert Latest(1, 5, "SUCCEEDED", None).newer_than(Latest(1, 4, "DOWNLOADING", None))
    assert not Latest(1, 4, "SUCCEEDED", None).newer_than(Latest(1, 4, "DOWNLOADING", None))


@given(
    states=st.lists(
        st.one_of(st.none(), st.tuples(st.sampled_from(STATE_NAMES), st.integers(1, 3))),
        max_size=40,
    ),
    cuts=st.lists(st.integers(0, 40), max_size=3),
)
def test_counts_always_agree_with_the_entries(
    states: list[tuple[str, int] | None], cuts: list[int]
) -> None:
    devices = [f"d{i}" for i in range(len(states))]
    latest = {
        d: Latest(1, 1, s[0], s[1] if s[0] == "FAILED" else None)
        for d, s in zip(devices, states, strict=True)
        if s is not None
    }
    ends = [min(c, len(devices)) for c in sorted(cuts)] + [len(devices)]
    built = rebuild(devices, latest, ends)
    expected: Counter[str] = Counter()
    for device in devices:
        if device not in built.entries:
            expected["s:PENDING"] += 1
            continue
        state, _, _, cause, wave = built.entries[device].split("|")
        expected[f"s:{state}"] += 1
        expected[f"w{wave}:{bucket(state)}"] += 1
        if cause:
            expected[f"c:{cause}"] += 1
    assert built.counts == dict(expected)
    assert all(d in built.entries for d in devices[: built.cursor])
    assert built.cursor == len(devices) or devices[built.cursor] not in built.entries


def test_assemble_joins_whole_lists_and_leaves_out_broken_ones() -> None:
    ids = [f"dev-{i}" for i in range(CHUNK_IDS + 5)]
    latest: dict[str, bytes | None] = {
        chunk_key("t1", 0): orjson.dumps(ids[:CHUNK_IDS]),
        chunk_key("t1", 1): orjson.dumps(ids[CHUNK_IDS:]),
        chunk_key("t2", 1): orjson.dumps(["x"]),  # its first chunk never came
        chunk_key("t3", 0): None,  # finished: tombstoned
        chunk_key("t4", 0): b"[1, 2]",  # not ids: left out, and the task with it
        chunk_key("t4", 1): orjson.dumps(["y"]),
        chunk_key("t5", 0): b"not json",
    }
    assert chunks(len(ids)) == 2
    assert assemble(latest) == {"t1": Recorded(ids)}
    assert assemble(latest)["t1"].whole(len(ids))
    assert not assemble(latest)["t1"].whole(len(ids) + 1)


def retry_record(of: int, ids: list[object]) -> bytes:
    return orjson.dumps({"of": of, "ids": ids})


def test_assemble_reads_a_retrys_list_and_its_retried_devices() -> None:
    items: list[object] = [f"dev-{i}" for i in range(CHUNK_IDS)] + [["dev-3", 1], ["dev-7", 0]]
    latest: dict[str, bytes | None] = {
        chunk_key("t1", 0): retry_record(len(items), items[:CHUNK_IDS]),
        chunk_key("t1", 1): retry_record(len(items), items[CHUNK_IDS:]),
        # cut short: its second record is still the list of the retry before
        chunk_key("t2", 0): retry_record(3, ["a", "b", ["a", 2]]),
        chunk_key("t2", 1): retry_record(2, ["c", ["c", 1]]),
        # one record of the creation's form, one of a retry's
        chunk_key("t3", 0): orjson.dumps(["a"]),
        chunk_key("t3", 1): retry_record(2, [["a", 1]]),
        chunk_key("t4", 0): retry_record(1, [["a", -1]]),  # no attempt is below 0
        chunk_key("t5", 0): retry_record(1, [["a", 1, 2]]),
        chunk_key("t6", 0): orjson.dumps({"of": 1, "ids": ["a"], "more": 1}),
    }
    recorded = assemble(latest)
    assert list(recorded) == ["t1"]
    assert recorded["t1"].ids == [f"dev-{i}" for i in range(CHUNK_IDS)] + ["dev-3", "dev-7"]
    assert recorded["t1"].retried == {"dev-3": 1, "dev-7": 0}
    assert recorded["t1"].whole(created_with=3)  # the retry's length counts, not the creation's
    short = assemble({chunk_key("t1", 0): retry_record(len(items), items[:CHUNK_IDS])})
    assert not short["t1"].whole(created_with=CHUNK_IDS)


def test_a_retried_task_releases_only_the_devices_its_retry_has_not_yet() -> None:
    # Created with e, a, b, c, d in waves ending at 2 and 4 (the retry's wave is 2). An
    # earlier retry released e, which succeeded at attempt 3; a succeeded; b failed at
    # attempt 1 and this retry released it again; c failed at 1 and is not released again
    # yet; d was stopped before its release.
    devices = ["e", "a", "b", "c", "d", "b", "c", "d"]
    latest = {
        "e": Latest(3, 5, "SUCCEEDED", None),
        "a": Latest(1, 4, "SUCCEEDED", None),
        "b": Latest(2, 1, "QUEUED", None),
        "c": Latest(1, 3, "FAILED", 7),
    }
    retried = {"e": 2, "b": 1, "c": 1, "d": 0}
    built = rebuild(devices, latest, ends=[2, 4, 8], retried=retried)
    assert built.entries == {
        "e": "SUCCEEDED|3|5||2",
        "a": "SUCCEEDED|1|4||0",
        "b": "QUEUED|2|1||2",
        "c": "PENDING|1|3||-1",  # as the retry left it
        "d": "PENDING|0|0||-1",
    }
    assert built.counts == {
        "s:SUCCEEDED": 2,
        "w0:succeeded": 1,
        "w2:succeeded": 1,
        "s:QUEUED": 1,
        "w2:active": 1,
        "s:PENDING": 2,
    }
    # From c's first place, in the retry's wave: the release passes over the devices that
    # are not pending, and releases c and d once each.
    assert (built.cursor, built.wave) == (3, 2)


def test_results_since_tells_the_recent_finished_devices_as_the_apply_did() -> None:
    latest = {
        "old": Latest(1, 4, "SUCCEEDED", None, at_ms=1_000),
        "new": Latest(1, 4, "FAILED", 22, at_ms=5_000),
        "busy": Latest(1, 2, "DOWNLOADING", None, at_ms=6_000),
    }
    notes = [orjson.loads(n) for n in results_since("t", latest, 2_000)]
    event = JobEventRecord(
        device_id="new",
        task_id="t",
        attempt=1,
        job_version=4,
        from_state="DOWNLOADING",
        to_state="FAILED",
        cause=22,
        at_ms=5_000,
    )
    assert notes == [device_result_event(event, "Fail")]


class Kept:
    """A topic's partitions as `kept_since` asks about them: (first offset kept or None
    when emptied, offset of the first record at or after the time or None, end offset)."""

    def __init__(self, parts: dict[int, tuple[int | None, int | None, int]]) -> None:
        self.parts = {TopicPartition("t", p): v for p, v in parts.items()}

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        column = 0 if set(timestamps.values()) == {0} else 1
        return {
            tp: None if (at := self.parts[tp][column]) is None else OffsetAndTimestamp(at, -1, -1)
            for tp in timestamps
        }

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.parts[tp][2] for tp in partitions}


@pytest.mark.parametrize(
    ("parts", "kept"),
    [
        ({0: (0, 5, 9), 1: (0, None, 3)}, True),  # nothing deleted
        ({0: (4, 6, 9)}, True),  # deleted, but a record older than the time is left
        ({0: (4, None, 9)}, True),  # every record left is older than the time
        ({0: (4, 4, 9)}, False),  # the oldest record left is already that late
        ({0: (None, None, 9)}, False),  # emptied by retention
        ({0: (None, None, 0)}, True),  # never written
    ],
)
def test_kept_since_says_whether_retention_took_records_that_late(
    parts: dict[int, tuple[int | None, int | None, int]], kept: bool
) -> None:
    fake = Kept(parts)
    assert kept_since(fake, list(fake.parts), 1_000) is kept  # type: ignore[arg-type]
