"""The apply path's shortcuts answer exactly what the general code does: the codec's
reading of an empty queue or done list, and a device's deadline and activity."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.jobstates import JobState
from tests.unit.workers.helpers import spec
from workers.codec import StateCorruptError, _unpack_job, pack, spec_ref, unpack
from workers.model import Device, Job

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=6,
)
SPEC = spec("t-fast")
SPECS = {spec_ref(SPEC).digest: SPEC}
JOB = [spec_ref(SPEC).digest, 1, 2, 3, 5000]


def strict_tail(queue: Any, done: Any) -> Any:
    """What the codec built from a stored queue and done list before its shortcut."""
    return (
        tuple(_unpack_job(q, SPECS) for q in queue),
        tuple((task, attempt) for task, attempt in done),
    )


@given(st.one_of(JSON, st.just([JOB])), st.one_of(JSON, st.just([["t0", 1]])))
def test_an_empty_queue_or_done_list_reads_as_before(queue: Any, done: Any) -> None:
    raw = orjson.dumps([True, "1.0", None, JOB, queue, done])
    try:
        expected: Any = strict_tail(queue, done)
    except (ValueError, TypeError, KeyError) as exc:
        with pytest.raises(StateCorruptError) as caught:
            unpack(raw, SPECS)
        assert str(caught.value) == f"stored device state is unreadable: {exc!r}"
        return
    device = unpack(raw, SPECS)
    assert (device.queue, device.done) == expected
    assert pack(device) == pack(device._replace(queue=expected[0], done=expected[1]))


STATES = st.sampled_from(list(JobState))
JOBS = st.builds(
    lambda state, deadline: Job(SPEC, 1, state, 0, deadline),
    STATES,
    st.none() | st.integers(0, 100),
)


@given(st.none() | JOBS, st.lists(JOBS, max_size=2))
def test_deadline_and_activity_read_as_the_general_rule(job: Job | None, queue: list[Job]) -> None:
    device = Device(online=True, job=job, queue=tuple(queue))
    present = [j.deadline_ms for j in (job, *queue) if j is not None and j.deadline_ms is not None]
    assert device.deadline_ms == (min(present) if present else None)
    assert device.active == (bool(queue) or (job is not None and not job.state.terminal))
