"""A device broker outage holds the deadlines of devices whose connection it took until
they are back, then gives each running window the time the device was away plus a grace;
deadlines from before it, of devices known offline, and after the hold fire as before.
The machine stamps when a device came online; the sweeper's decision uses both."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota import broker_outage
from ota.broker_outage import BrokerOutage
from workers.broker_hold import BrokerHold
from workers.codec import pack, spec_ref, unpack
from workers.events import Event, Kind
from workers.model import Device
from workers.sweeper import due_timeouts

from .helpers import DL_FINISHED, DL_STARTED, Runner, progress, start, version

SINCE, UNTIL = 100_000, 112_000  # the gateway's link was down 12 s
HOLD, GRACE = 600_000, 10_000
OUTAGE = BrokerOutage(SINCE, UNTIL)
RULE = BrokerHold.after(OUTAGE, UNTIL + 1, HOLD, GRACE)


def device(connected_ms: int, online: bool | None = True) -> Device:
    return Device(online=online, connection="c1", connected_ms=connected_ms)


def test_a_deadline_from_before_the_outage_fires_at_its_own_time() -> None:
    assert RULE.due_at(SINCE - 1, device(50_000)) == SINCE - 1


def test_a_device_the_outage_disconnected_is_held_until_the_hold_ends() -> None:
    assert RULE.due_at(SINCE + 5_000, device(50_000)) == UNTIL + HOLD


def test_a_device_not_yet_stamped_counts_as_disconnected_by_the_outage() -> None:
    assert RULE.due_at(SINCE + 5_000, device(0)) == UNTIL + HOLD


def test_a_window_longer_than_the_hold_keeps_its_own_end_while_the_device_is_away() -> None:
    late = UNTIL + HOLD + 60_000
    assert RULE.due_at(late, device(50_000)) == late


def test_a_device_back_gets_its_time_away_and_the_grace() -> None:
    back = UNTIL + 40_000
    assert RULE.due_at(SINCE + 5_000, device(back)) == SINCE + 5_000 + (back - SINCE) + GRACE


def test_a_device_known_offline_is_not_held() -> None:
    assert RULE.due_at(SINCE + 5_000, device(50_000, online=False)) == SINCE + 5_000


def test_a_device_that_came_online_after_the_hold_is_owed_nothing() -> None:
    assert RULE.due_at(UNTIL + HOLD + 10, device(UNTIL + HOLD + 1)) == UNTIL + HOLD + 10


def test_the_outage_is_forgotten_once_every_held_device_had_its_extension() -> None:
    last = RULE.back_by_ms + (RULE.back_by_ms - SINCE) + GRACE
    assert RULE.remembered(last - 1)
    assert not RULE.remembered(last)


@given(
    deadline=st.integers(0, 3_000_000),
    connected=st.integers(0, 3_000_000),
    online=st.sampled_from([True, False, None]),
)
def test_a_hold_never_makes_a_deadline_earlier(deadline: int, connected: int, online: bool) -> None:
    assert RULE.due_at(deadline, device(connected, online)) >= deadline


@given(deadline=st.integers(SINCE, 3_000_000), connected=st.integers(0, SINCE - 1))
def test_a_disconnected_device_is_held_at_least_until_the_hold_ends(
    deadline: int, connected: int
) -> None:
    assert RULE.due_at(deadline, device(connected)) >= UNTIL + HOLD


@given(st.integers(0, 10**13), st.integers(0, 10**13), st.booleans())
def test_an_outage_reads_back_as_stored(a: int, b: int, ended: bool) -> None:
    outage = BrokerOutage(min(a, b), max(a, b) if ended else None)
    assert broker_outage.decode(broker_outage.encode(outage)) == outage


def test_an_outage_under_way_is_held_as_if_it_ended_at_the_reading() -> None:
    assert BrokerHold.after(BrokerOutage(SINCE), UNTIL, HOLD, GRACE) == RULE


def test_an_ongoing_record_lives_briefly_and_an_ended_one_past_any_hold() -> None:
    assert BrokerOutage(SINCE).expires_at_ms(SINCE + 5) == SINCE + 5 + broker_outage.ONGOING_LIFE_MS
    assert OUTAGE.expires_at_ms(UNTIL + 5) == UNTIL + broker_outage.KEY_LIFE_MS


@pytest.mark.parametrize(
    "raw", [b"", b"1", b",", b",2", b"1,2,3", b"-1,2", b"x,2", b"5,4", b"1, 2"]
)
def test_a_stored_outage_that_is_not_two_ordered_numbers_is_ignored(raw: bytes) -> None:
    assert broker_outage.decode(raw) is None


# ------------------------------------------------------------- the machine's stamp


def test_the_first_online_notice_stamps_the_device() -> None:
    run = Runner(Device(), 5_000)
    run(Event(Kind.ONLINE, connection="c1"))
    assert run.device.connected_ms == 5_000


def test_a_reconnect_stamps_the_device_and_a_repeated_notice_does_not() -> None:
    run = Runner(Device(), 5_000)
    run(Event(Kind.ONLINE, connection="c1"))
    run(Event(Kind.ONLINE, connection="c1"), at_ms=6_000)
    assert run.device.connected_ms == 5_000
    run(Event(Kind.ONLINE, connection="c2"), at_ms=7_000)
    assert run.device.connected_ms == 7_000


def test_traffic_stamps_a_device_thought_offline_and_not_one_thought_online() -> None:
    run = Runner(Device(), 5_000)
    run(Event(Kind.ONLINE, connection="c1"))
    run(version(fw="1.0"), at_ms=6_000)
    assert run.device.connected_ms == 5_000
    run(Event(Kind.OFFLINE), at_ms=7_000)
    run(version(fw="1.0"), at_ms=8_000)
    assert run.device.connected_ms == 8_000


def test_the_stamp_survives_the_stored_form_and_old_states_read_as_unstamped() -> None:
    stamped = Device(online=True, connection="c1", connected_ms=123_456)
    assert unpack(pack(stamped), {}) == stamped
    assert pack(stamped._replace(connected_ms=0)).endswith(b',"c1"]')  # left off: old form
    assert unpack(b'[true,null,null,null,[],[],"c1"]', {}).connected_ms == 0


# ------------------------------------------------------------- the sweeper's decision


def downloaded_at(now: int) -> Device:
    """A device in DOWNLOADED, online since `now` - 1 s, its update window running."""
    run = Runner(Device(), now - 1_000)
    run(Event(Kind.ONLINE, connection="c1"))
    run(start())
    for event in (version(fw="1.0"), DL_STARTED, DL_FINISHED):
        run(event)
    return run.device


def sweep(dev: Device, now: int, hold: BrokerHold | None) -> tuple[int, bool, bool]:
    job = dev.job
    assert job is not None
    specs = {spec_ref(job.spec).digest: job.spec}
    due = due_timeouts("d1", pack(dev), specs, now, now, hold)
    return len(due.timeouts), due.held, due.held_by_broker


def test_the_sweeper_holds_a_due_deadline_of_a_device_the_outage_disconnected() -> None:
    dev = downloaded_at(SINCE - 5_000)
    deadline = dev.deadline_ms
    assert deadline is not None
    assert deadline > SINCE
    after = deadline + 1
    assert sweep(dev, after, None) == (1, False, False)
    assert sweep(dev, after, RULE) == (0, True, True)  # lease kept: asked again later
    assert sweep(dev, UNTIL + HOLD, RULE) == (1, False, False)  # never came back


def test_the_sweeper_fires_once_a_device_back_used_its_extension() -> None:
    dev = downloaded_at(SINCE - 5_000)
    deadline = dev.deadline_ms
    assert deadline is not None
    back = UNTIL + 30_000
    returned = dev._replace(connection="c2", connected_ms=back)
    extended = deadline + (back - SINCE) + GRACE
    assert sweep(returned, extended - 1, RULE) == (0, True, True)
    assert sweep(returned, extended, RULE) == (1, False, False)


def test_update_progress_after_the_reconnect_moves_the_job_on_its_own_window() -> None:
    """The hold only delays timeouts: the job still follows the device's reports."""
    run = Runner(downloaded_at(SINCE - 5_000), UNTIL + 30_000)
    run(Event(Kind.ONLINE, connection="c2"))
    run(progress(0, 60))
    assert run.state.value == "UPDATING"
    assert run.device.connected_ms == UNTIL + 30_000
