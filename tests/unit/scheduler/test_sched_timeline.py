"""Timeline entries in their stored form: read back as the API's object (a short entry
with the task of the entry below it), the same event giving the same bytes, entries
stored in the forms before (objects, arrays with state names or codes) still read, and
where a device's full history is."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.catalog import FailureCause
from ota.records import JobEventRecord
from scheduler import timeline

STATES = st.sampled_from(["QUEUED", "COMMAND_SENT", "DOWNLOADING", "SUCCEEDED", "FAILED"])
DETAIL = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.text(max_size=12), st.integers(-(2**53), 2**53), st.booleans()),
)


def api_object(event: JobEventRecord, known_causes: bool = True) -> dict[str, object]:
    """What GET /v1/devices/<id> showed for an entry before the compact form."""
    return {
        "id": event.id,
        "at_ms": event.at_ms,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "job_version": event.job_version,
        "from": event.from_state,
        "to": event.to_state,
        "cause": event.cause,
        "cause_message": (
            timeline.cause_message(event.cause)
            if not known_causes
            else None
            if event.cause is None
            else FailureCause(event.cause).message
        ),
        "detail": dict(event.detail),
    }


@given(
    STATES,
    STATES,
    st.one_of(st.none(), st.sampled_from([c.value for c in FailureCause])),
    DETAIL,
    st.integers(0, 2**45),
)
def test_an_entry_reads_back_as_the_api_showed_it(
    before: str, after: str, cause: int | None, detail: dict[str, object], at_ms: int
) -> None:
    event = JobEventRecord("d1", "t1", 2, 7, before, after, cause, detail, at_ms=at_ms)
    stored = timeline.encode(event)
    assert timeline.decode(stored) == api_object(event)
    assert list(timeline.decode(stored)) == list(api_object(event))  # the same key order
    assert timeline.encode(event) == stored  # a replay finds its entry again
    full, short = timeline.forms(event)
    assert (full, short) == timeline.forms(event)
    assert timeline.decode(short, "t1") == api_object(event)
    assert list(timeline.decode(short, "t1")) == list(api_object(event))


IDS = st.one_of(
    st.builds("w{}-{}-{}".format, st.integers(0, 95), st.integers(0, 2**40), st.integers(0, 9)),
    st.uuids().map(lambda u: u.hex),
    st.text(max_size=20),
)
TASKS = st.one_of(st.uuids().map(lambda u: u.hex), st.sampled_from(["t-1", "a.b:c_d"]), st.text())
EVENTS = st.builds(
    JobEventRecord,
    device_id=st.just("d1"),
    task_id=TASKS,
    attempt=st.integers(0, 2**31),
    job_version=st.integers(0, 2**31),
    from_state=STATES | st.text(max_size=10),
    to_state=STATES | st.text(max_size=10),
    cause=st.one_of(st.none(), st.integers(0, 2**31)),
    detail=DETAIL,
    id=IDS,
    at_ms=st.integers(-(2**53), 2**53),
)


def stored_timeline(events: list[JobEventRecord]) -> list[bytes]:
    """The entries as the Redis script stores events pushed in this order, newest first:
    short when the entry below is of the same task."""
    entries: list[bytes] = []
    below: str | None = None
    for event in events:
        full, short = timeline.forms(event)
        entries.insert(0, short if event.task_id == below else full)
        below = event.task_id
    return entries


@given(st.lists(EVENTS, max_size=12), st.integers(1, 12))
def test_a_timeline_reads_back_as_the_api_showed_it(events: list[JobEventRecord], cap: int) -> None:
    """Arbitrary events (any ids, tasks, states, causes, details, stamps), kept whole or
    trimmed to the cap with the oldest kept entry in its full form: each reads back as the
    API's object before the compact forms."""
    stored = stored_timeline(events)
    expected = [api_object(e, known_causes=False) for e in reversed(events)]
    assert timeline.decode_all(stored) == expected
    kept = stored[:cap]
    if kept:
        kept[-1] = timeline.encode(events[len(events) - len(kept)])
    assert timeline.decode_all(kept) == expected[:cap]
    for event, entry in zip(reversed(events), stored, strict=True):
        assert entry in timeline.forms(event)  # a replay finds its entry in either form


def test_the_stored_forms_are_a_fraction_of_the_api_object() -> None:
    event = JobEventRecord("dev-1", "a" * 32, 1, 3, "COMMAND_SENT", "DOWNLOADING", at_ms=10**12)
    full, short = timeline.forms(event)
    assert len(full) < 0.45 * len(orjson.dumps(api_object(event)))
    assert len(short) < 0.3 * len(orjson.dumps(api_object(event)))
    assert full.endswith(b",1,3,3,4]")  # states as their codes; no cause, no detail
    assert short == b'["%s",1000000000000,1,3,3,4]' % event.id.encode()


def folded(result: JobEventRecord, earlier: list[JobEventRecord]) -> bytes:
    """A succeeded try's summary as the Redis script folds it: the result's full entry,
    detail and cause padded in, then the earlier entries' steps, oldest first, a step's
    cause last when it has one."""
    full = orjson.loads(timeline.encode(result))
    full += [{}, None][len(full) - 7 :]
    codes = {e.to_state: code for e in earlier for code in [orjson.loads(timeline.encode(e))[6]]}
    codes |= {e.from_state: orjson.loads(timeline.encode(e))[5] for e in earlier}
    steps = [
        [e.job_version, codes[e.from_state], codes[e.to_state], result.at_ms - e.at_ms]
        + ([] if e.cause is None else [e.cause])
        for e in earlier
    ]
    return orjson.dumps([*full, steps])


def test_a_summary_reads_back_as_its_result_and_steps() -> None:
    """A folded try shows its result as it was, then each earlier step with its states,
    version and time; the steps' event ids and details are left in the log."""
    moves = [("QUEUED", "COMMAND_SENT"), ("COMMAND_SENT", "WAITING_RETRY"), ("UPDATING", "X")]
    earlier = [
        JobEventRecord("d1", "t1", 2, v, a, b, cause, {"n": v}, at_ms=1000 + 10 * v)
        for v, (a, b), cause in zip(range(1, 4), moves, [None, 22, None], strict=True)
    ]
    result = JobEventRecord(
        "d1", "t1", 2, 4, "UPDATING", "SUCCEEDED", detail={"version": "2.0"}, at_ms=1100
    )
    raw = folded(result, earlier)
    assert raw.endswith(b"]]")
    shown = timeline.decode_all([raw, timeline.encode(earlier[0])])
    assert shown[0] == api_object(result)
    steps = [api_object(e) | {"id": None, "detail": {}} for e in reversed(earlier)]
    assert shown[1:4] == steps
    assert shown[4] == api_object(earlier[0])
    assert timeline.decode(raw) == api_object(result)
    assert len(raw) < 0.6 * sum(len(timeline.encode(e)) for e in [result, *earlier])


@pytest.mark.parametrize(
    "steps",
    [
        b"[[1,3,4]]",
        b'[[1,3,4,"x"]]',
        b"[[1,3,99,5]]",
        b"[5]",
        b'[[1,3,4,5,"x"]]',
        b"[[1,3,4,5,6,7]]",
    ],
)
def test_a_summary_with_a_step_of_no_known_form_is_refused(steps: bytes) -> None:
    with pytest.raises(timeline.BadEntryError):
        timeline.decode(b'["t", "i", 5, 1, 1, 3, 4, {}, null, ' + steps + b"]")


def test_a_state_without_a_code_is_kept_by_name() -> None:
    event = JobEventRecord("d1", "t1", 1, 1, "PENDING", "QUEUED", at_ms=5)
    assert timeline.encode(event).endswith(b',"PENDING",0]')
    assert timeline.decode(timeline.encode(event)) == api_object(event)


def test_an_entry_with_state_names_is_read() -> None:
    event = JobEventRecord("d1", "t1", 1, 2, "UPDATING", "FAILED", 28, {"by": "edge"}, at_ms=5)
    named = orjson.dumps([event.id, 5, "t1", 1, 2, "UPDATING", "FAILED", 28, {"by": "edge"}])
    assert timeline.decode(named) == api_object(event)


def test_an_entry_of_the_array_form_before_is_read() -> None:
    """[id, at_ms, task_id, attempt, job_version, from, to, cause, detail], states as codes."""
    event = JobEventRecord("d1", "t1", 1, 2, "UPDATING", "FAILED", 28, {"by": "edge"}, at_ms=5)
    coded = orjson.dumps([event.id, 5, "t1", 1, 2, 6, 10, 28, {"by": "edge"}])
    assert timeline.decode(coded) == api_object(event)
    plain = JobEventRecord("d1", "t1", 1, 2, "COMMAND_SENT", "DOWNLOADING", at_ms=5)
    assert timeline.decode(orjson.dumps([plain.id, 5, "t1", 1, 2, 3, 4])) == api_object(plain)


def test_short_entries_above_entries_of_the_forms_before_take_their_task() -> None:
    sent = JobEventRecord("d1", "t-old", 1, 1, "QUEUED", "COMMAND_SENT", at_ms=5)
    done = JobEventRecord("d1", "t-old", 1, 2, "COMMAND_SENT", "SUCCEEDED", at_ms=6)
    short = timeline.forms(done)[1]
    for older in (
        orjson.dumps(api_object(sent)),
        orjson.dumps([sent.id, 5, "t-old", 1, 1, "QUEUED", "COMMAND_SENT"]),
        orjson.dumps([sent.id, 5, "t-old", 1, 1, 0, 3]),
    ):
        assert timeline.decode_all([short, older]) == [api_object(done), api_object(sent)]


def test_the_short_form_leaves_out_only_a_plain_task_id() -> None:
    event = JobEventRecord("d1", "5f3a9c2e8b7d4e1fa0c36b9d2e4f7a81", 1, 2, "QUEUED", "QUEUED")
    full, short = timeline.forms(event)
    assert full == b'["5f3a9c2e8b7d4e1fa0c36b9d2e4f7a81",' + short[1:]
    assert b"5f3a9c2e" not in short
    for odd in ('t "1"', "t/1", "t\\1", "t\u00e9", ""):
        full, short = timeline.forms(JobEventRecord("d1", odd, 1, 2, "QUEUED", "QUEUED"))
        assert short == full


def test_a_cause_without_a_detail_keeps_the_empty_detail() -> None:
    event = JobEventRecord("d1", "t1", 1, 2, "UPDATING", "FAILED", 28, id="w1-2-0", at_ms=5)
    assert timeline.forms(event)[1] == b'["w1-2-0",5,1,2,6,10,{},28]'
    assert timeline.decode(timeline.forms(event)[1], "t1") == api_object(event)


def test_a_short_entry_with_no_task_below_is_refused() -> None:
    event = JobEventRecord("d1", "t1", 1, 2, "QUEUED", "QUEUED", at_ms=5)
    with pytest.raises(timeline.BadEntryError, match="no task below"):
        timeline.decode_all([timeline.forms(event)[1]])


def test_an_entry_stored_as_an_object_is_read_as_it_is() -> None:
    event = JobEventRecord("d1", "t1", 1, 1, "QUEUED", "FAILED", 28, {"by": "edge"}, at_ms=5)
    assert timeline.decode(orjson.dumps(api_object(event))) == api_object(event)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"[" + b"1," * 9 + b"1]",
        b'["i", 5, "t", 1, 1, 3, 99]',  # no state has code 99
        b'["i", 5, "t", 1, 1, 3, true]',
        b'["t", "i", 5, 1, 1, 3, 4, {}, 1, 2]',  # the full form, a field too many
        b'["i", 5, 1, 1, 3, 99]',  # the short form, no state 99
    ],
)
def test_an_entry_of_no_known_form_is_refused(raw: bytes) -> None:
    with pytest.raises(timeline.BadEntryError):
        timeline.decode(raw)


def test_an_unknown_cause_is_named_so() -> None:
    event = JobEventRecord("d1", "t1", 1, 1, "QUEUED", "FAILED", 999, at_ms=5)
    assert timeline.decode(timeline.encode(event))["cause_message"] == "unknown cause 999"


def test_history_says_where_the_log_holds_the_device() -> None:
    fields = {"tl_log": "7/123456", "tl_cut": "12"}
    assert timeline.history(fields, "ota.job-events", 32) == {
        "topic": "ota.job-events",
        "partition": 7,
        "first_offset": 123456,
        "trimmed": 12,
        "expired": False,
    }
    assert timeline.history({"tl_log": "0/0"}, "x", 1) == {
        "topic": "x",
        "partition": 0,
        "first_offset": 0,
        "trimmed": 0,
        "expired": False,
    }


def test_history_says_when_older_entries_expired() -> None:
    # none held: the whole timeline expired; some held but marked: older ones did
    assert timeline.history({"tl_log": "1/2"}, "t", 0)["expired"] is True  # type: ignore[index]
    marked = {"tl_log": "1/2", "tl_expired": "1"}
    assert timeline.history(marked, "t", 3)["expired"] is True  # type: ignore[index]


@pytest.mark.parametrize("value", ["", "7", "7/", "/5", "a/5", "7/-1"])
def test_no_history_without_a_known_position(value: str) -> None:
    assert timeline.history({"tl_log": value}, "t", 0) is None


def test_log_positions() -> None:
    assert timeline.log_position(3, 42) == "3/42"
    assert timeline.log_position(None, 42) == ""
    assert timeline.log_position(3, -1001) == ""  # librdkafka's "no offset"


@pytest.mark.parametrize(
    ("before", "after", "detail", "where"),
    [
        ("DOWNLOADING", "SUCCEEDED", {}, "close"),
        ("SUCCEEDED", "SUCCEEDED", {}, ""),  # a note after the result: in log order
        ("COMMAND_SENT", "DOWNLOADED", {"before_result": True}, "0.3333"),
        ("COMMAND_SENT", "DOWNLOADING", {"before_result": True}, "0.6666"),
        ("COMMAND_SENT", "UPDATING", {"before_result": True}, "0.5"),
        ("COMMAND_SENT", "DOWNLOADING", {}, ""),
    ],
)
def test_placement(before: str, after: str, detail: dict[str, object], where: str) -> None:
    event = JobEventRecord("d1", "t1", 1, 1, before, after, detail=detail, at_ms=5)
    assert timeline.place(event) == where
