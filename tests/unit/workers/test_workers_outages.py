"""The deadline clock across Kafka outages (workers.outages): nothing fires while Kafka does
not answer; afterwards, deadlines from the outage's start on come due later by its length
plus the grace, earlier ones at their own time, and after the memory every deadline is
due at its own time again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.outages import OutageClock, Pause, decode_pause, encode_pause

GRACE = 10_000
MEMORY = 900_000


def clock_after_outage(answered: int, down_at: int, back: int) -> OutageClock:
    """Kafka answered at `answered`, did not at `down_at`, answered again at `back`."""
    clock = OutageClock(GRACE, MEMORY)
    clock.answered(answered)
    clock.unanswered(down_at)
    clock.answered(back)
    return clock


def test_without_an_outage_every_passed_deadline_is_due() -> None:
    clock = OutageClock(GRACE, MEMORY)
    assert clock.answered(1_000) is None
    assert clock.cutoff(5_000) == 5_000
    assert clock.due_at(4_000, 5_000) == 4_000


def test_while_kafka_does_not_answer_nothing_is_due() -> None:
    clock = OutageClock(GRACE, MEMORY)
    clock.answered(1_000)
    clock.unanswered(2_000)
    assert clock.down
    assert clock.cutoff(2_000) is None
    assert clock.cutoff(60_000) is None


def test_the_outage_counts_from_the_last_answer_and_pushes_later_deadlines() -> None:
    clock = OutageClock(GRACE, MEMORY)
    clock.answered(1_000)
    clock.unanswered(2_000)
    clock.unanswered(3_000)  # still down: the start stays the last answer
    pause = clock.answered(31_000)
    assert pause == Pause(since_ms=1_000, by_ms=30_000 + GRACE, until_ms=31_000 + MEMORY)
    assert not clock.down
    # A deadline from before the outage fires at once; one inside it only once the lost
    # time and the grace have passed.
    assert clock.cutoff(31_000) == 999
    assert clock.due_at(500, 31_000) == 500
    assert clock.due_at(20_000, 31_000) == 20_000 + 30_000 + GRACE
    assert clock.cutoff(60_000) == 60_000 - 30_000 - GRACE


def test_a_process_that_never_saw_kafka_answer_counts_from_its_first_probe() -> None:
    clock = OutageClock(GRACE, MEMORY)
    clock.unanswered(7_000)
    assert clock.answered(9_000) == Pause(7_000, 2_000 + GRACE, 9_000 + MEMORY)


def test_after_the_memory_deadlines_are_due_at_their_own_time() -> None:
    clock = clock_after_outage(1_000, 2_000, 11_000)
    until = 11_000 + MEMORY
    assert clock.cutoff(until - 1) == until - 1 - 10_000 - GRACE
    assert clock.cutoff(until) == until
    assert clock.pause is None
    assert clock.due_at(until - 5, until) == until - 5


def test_a_second_outage_within_the_memory_adds_its_length() -> None:
    clock = clock_after_outage(1_000, 2_000, 11_000)  # lost 10 s
    clock.unanswered(20_000)
    assert clock.cutoff(21_000) is None
    pause = clock.answered(26_000)  # lost 6 s more, counted from the answer at 11 s
    assert pause == Pause(1_000, 10_000 + GRACE + 15_000, 26_000 + MEMORY)


def test_a_second_outage_after_the_memory_is_a_pause_of_its_own() -> None:
    clock = clock_after_outage(1_000, 2_000, 11_000)
    later = 11_000 + MEMORY + 1
    clock.answered(later)
    clock.unanswered(later + 1)
    assert clock.answered(later + 4_000) == Pause(later, 4_000 + GRACE, later + 4_000 + MEMORY)


times = st.integers(min_value=0, max_value=10**7)


@given(times, st.integers(0, 10**6), st.integers(0, 10**6), times, times)
def test_a_deadline_is_due_exactly_when_due_at_has_passed(
    answered: int, down_for: int, back_after: int, deadline: int, later: int
) -> None:
    back = answered + down_for + back_after
    clock = clock_after_outage(answered, answered + down_for, back)
    now = back + later
    cutoff = clock.cutoff(now)
    assert cutoff is not None
    assert cutoff <= now
    assert (deadline <= cutoff) == (clock.due_at(deadline, now) <= now)
    # Never earlier than its own time, never later than its time plus the pause.
    assert deadline <= clock.due_at(deadline, now) <= deadline + down_for + back_after + GRACE


# A pause another sweeper shared (through Redis: workers.store).


def test_a_clock_that_saw_no_outage_adopts_a_shared_pause_and_holds_its_deadlines() -> None:
    shared = Pause(since_ms=1_000, by_ms=30_000, until_ms=1_000 + MEMORY)
    clock = OutageClock(GRACE, MEMORY)
    clock.answered(40_000)  # started after the outage: it never saw Kafka down
    assert clock.cutoff(40_000) == 40_000
    assert clock.adopt(shared, 40_000) == shared
    assert clock.cutoff(40_000) == 10_000  # the outage's deadlines are held, as there
    assert clock.due_at(5_000, 40_000) == 35_000
    assert clock.adopt(shared, 41_000) is None  # known already: nothing changes


def test_a_shared_pause_past_its_memory_is_not_adopted() -> None:
    clock = OutageClock(GRACE, MEMORY)
    assert clock.adopt(Pause(1_000, 30_000, 50_000), 50_000) is None
    assert clock.pause is None
    assert clock.cutoff(50_000) == 50_000


def test_a_shared_pause_joins_the_clocks_own() -> None:
    clock = clock_after_outage(5_000, 6_000, 20_000)  # its own: since 5 s, by 15 s + grace
    own = clock.pause
    assert own == Pause(5_000, 15_000 + GRACE, 20_000 + MEMORY)
    joined = clock.adopt(Pause(3_000, 12_000, 30_000 + MEMORY), 31_000)
    assert joined == Pause(3_000, 15_000 + GRACE, 30_000 + MEMORY)
    # A shorter pause from a process that saw less adds nothing.
    assert clock.adopt(Pause(4_000, 1_000, 25_000), 31_000) is None


pauses = st.builds(Pause, times, st.integers(0, 10**6), times)


@given(pauses, pauses, times)
def test_adopting_never_fires_a_deadline_either_pause_holds(
    own: Pause, shared: Pause, now: int
) -> None:
    clock = OutageClock(GRACE, MEMORY)
    clock.pause = own
    before = clock.cutoff(now)
    clock.adopt(shared, now)
    after = clock.cutoff(now)
    assert before is not None
    assert after is not None
    assert after <= before  # never more due than before
    if now < shared.until_ms:
        alone = OutageClock(GRACE, MEMORY)
        alone.pause = shared
        held_by_shared = alone.cutoff(now)
        assert held_by_shared is not None
        assert after <= held_by_shared


@given(pauses)
def test_a_pause_reads_back_as_shared(pause: Pause) -> None:
    assert decode_pause(encode_pause(pause)) == pause


@pytest.mark.parametrize("raw", [b"", b"1,2", b"1,2,3,4", b"a,2,3", b"-1,2,3", b"1, 2,3"])
def test_a_shared_pause_that_is_not_three_numbers_is_ignored(raw: bytes) -> None:
    assert decode_pause(raw) is None
