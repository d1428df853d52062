"""Timeline entries in their stored form: read back as the API's object, the same event
giving the same bytes, entries stored before as objects still read, and where a
device's full history is."""

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


def api_object(event: JobEventRecord) -> dict[str, object]:
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
        "cause_message": None if event.cause is None else FailureCause(event.cause).message,
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


def test_the_stored_form_is_under_half_the_api_object() -> None:
    event = JobEventRecord("dev-1", "a" * 32, 1, 3, "COMMAND_SENT", "DOWNLOADING", at_ms=10**12)
    stored = timeline.encode(event)
    assert len(stored) < 0.45 * len(orjson.dumps(api_object(event)))
    assert stored.endswith(b",1,3,3,4]")  # states as their codes; no cause, no detail


def test_a_state_without_a_code_is_kept_by_name() -> None:
    event = JobEventRecord("d1", "t1", 1, 1, "PENDING", "QUEUED", at_ms=5)
    assert timeline.encode(event).endswith(b',"PENDING",0]')
    assert timeline.decode(timeline.encode(event)) == api_object(event)


def test_an_entry_with_state_names_is_read() -> None:
    event = JobEventRecord("d1", "t1", 1, 2, "UPDATING", "FAILED", 28, {"by": "edge"}, at_ms=5)
    named = orjson.dumps([event.id, 5, "t1", 1, 2, "UPDATING", "FAILED", 28, {"by": "edge"}])
    assert timeline.decode(named) == api_object(event)


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
    assert timeline.history(fields, "ota.job-events") == {
        "topic": "ota.job-events",
        "partition": 7,
        "first_offset": 123456,
        "trimmed": 12,
    }
    assert timeline.history({"tl_log": "0/0"}, "x") == {
        "topic": "x",
        "partition": 0,
        "first_offset": 0,
        "trimmed": 0,
    }


@pytest.mark.parametrize("value", ["", "7", "7/", "/5", "a/5", "7/-1"])
def test_no_history_without_a_known_position(value: str) -> None:
    assert timeline.history({"tl_log": value}, "t") is None


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
