"""Continuous targeting's pure parts: the policy fields, when a task is open, pacing an open
task (it never finishes while open, still aborts, judges a wave without removed devices)
and whether one device matches a followed target."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.devices import DeviceFilter
from scheduler.errors import ValidationError
from scheduler.matching import Facts, Followed, filter_matches, followed, matches
from scheduler.pacing import Hold, PaceInput, decide
from scheduler.policy import AbortRule, TaskPolicy, Wave, parse_policy, policy_json
from scheduler.taskstatus import Tally, TaskStatus
from scheduler.waves import wave_ends

NOW = int(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
HOUR_MS = 3_600_000


def snapshot(policy: TaskPolicy, total: int, **changes: object) -> PaceInput:
    base = PaceInput(
        status=TaskStatus.PROCESSING,
        policy=policy,
        ends=tuple(wave_ends(total, policy.waves)),
        cursor=0,
        wave=0,
        hold=Hold.NONE,
        tokens=0.0,
        bucket_ms=0,
        stopping=False,
        tally=Tally(pending=total),
        wave_tallies=tuple(Tally() for _ in policy.waves),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------ policy


def test_continuous_with_an_end_round_trips() -> None:
    policy = parse_policy({"continuous": True, "end_time_ms": NOW + HOUR_MS}, NOW)
    assert (policy.continuous, policy.end_ms) == (True, NOW + HOUR_MS)
    assert parse_policy(policy_json(policy), None) == policy


def test_a_policy_stored_before_continuous_is_not_continuous() -> None:
    stored = policy_json(TaskPolicy())
    del stored["continuous"]
    assert parse_policy(stored, None) == TaskPolicy()


def test_an_end_without_continuous_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_policy({"end_time_ms": NOW + HOUR_MS}, NOW)
    assert (caught.value.code, caught.value.field) == ("conflicting_fields", "policy.end_time_ms")


def test_rolling_back_failed_confirmations_of_a_task_without_an_end_is_refused() -> None:
    rollback = {
        "success": "confirmed",
        "rollback_package_id": "pkg-old",
        "rollback_on_failed_confirmation": True,
    }
    with pytest.raises(ValidationError) as caught:
        parse_policy({"continuous": True, **rollback}, NOW)
    assert (caught.value.code, caught.value.field) == (
        "conflicting_fields",
        "policy.rollback_on_failed_confirmation",
    )
    assert "end_time_ms" in caught.value.message
    ended = parse_policy({"continuous": True, "end_time_ms": NOW + HOUR_MS, **rollback}, NOW)
    assert ended.rollback_on_failed_confirmation
    assert parse_policy(rollback, NOW).rollback_on_failed_confirmation  # not continuous
    # A stored policy is read as it was accepted.
    stored = policy_json(replace(ended, end_ms=None))
    assert parse_policy(stored, None).rollback_on_failed_confirmation


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        ({"continuous": True, "end_time_ms": NOW - 1}, "now"),
        (
            {"continuous": True, "schedule_time_ms": NOW + HOUR_MS, "end_time_ms": NOW + 1},
            "schedule_time_ms",
        ),
    ],
)
def test_an_end_before_the_start_is_refused(policy: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_policy(policy, NOW)
    assert caught.value.code == "bad_end_time"
    assert caught.value.field == "policy.end_time_ms"
    assert why in caught.value.message


def test_open_until_the_end_and_only_when_continuous() -> None:
    assert not TaskPolicy().open_at(NOW)
    assert TaskPolicy(continuous=True).open_at(NOW + 10_000 * HOUR_MS)
    ending = TaskPolicy(continuous=True, end_ms=NOW)
    assert ending.open_at(NOW - 1)
    assert not ending.open_at(NOW)


# ------------------------------------------------------------ pacing


def test_an_open_task_with_every_device_finished_stays_processing() -> None:
    policy = TaskPolicy(continuous=True, end_ms=NOW + HOUR_MS)
    done = snapshot(policy, 3, cursor=3, tally=Tally(succeeded=3))
    step = decide(done, NOW)
    assert step.status is None
    assert step.release == 0


def test_an_open_task_with_no_devices_yet_waits() -> None:
    step = decide(snapshot(TaskPolicy(continuous=True), 0, tally=Tally()), NOW)
    assert step.status is None


def test_once_its_end_passes_the_task_finishes_as_usual() -> None:
    policy = TaskPolicy(continuous=True, end_ms=NOW)
    done = snapshot(policy, 3, cursor=3, tally=Tally(succeeded=2, failed=1))
    step = decide(done, NOW)
    assert step.status is TaskStatus.PARTIAL_SUCCESS


def test_an_ended_task_still_releases_its_pending_devices_first() -> None:
    policy = TaskPolicy(continuous=True, end_ms=NOW)
    step = decide(snapshot(policy, 4, cursor=2, tally=Tally(pending=2, succeeded=2)), NOW)
    assert step.status is None
    assert step.release == 2


def test_a_cancelled_open_task_stops() -> None:
    policy = TaskPolicy(continuous=True)
    stopping = snapshot(policy, 2, cursor=2, stopping=True, tally=Tally(cancelled=2))
    assert decide(stopping, NOW).status is TaskStatus.STOPPED


def test_an_idle_open_task_still_aborts() -> None:
    policy = TaskPolicy(continuous=True, abort=(AbortRule(failure_pct=50.0, min_finished=2),))
    idle = snapshot(policy, 2, cursor=2, tally=Tally(failed=2))
    step = decide(idle, NOW)
    assert (step.abort, step.status) == (True, TaskStatus.STOPPED)


def test_a_wave_is_judged_without_its_removed_devices() -> None:
    # A 100 % wave of 4 where one device left before its release: 3 of 3 pass it.
    policy = TaskPolicy(waves=(Wave(count=4, success_threshold_pct=100.0),))
    passed = Tally(succeeded=3)
    base = snapshot(policy, 10, cursor=4, tally=Tally(pending=6, succeeded=3))
    stuck = decide(replace(base, wave_tallies=(passed,)), NOW)
    assert (stuck.wave, stuck.release) == (0, 0)
    moved = decide(replace(base, wave_tallies=(passed,), wave_removed=(1,)), NOW)
    assert (moved.wave, moved.release) == (1, 6)


# ------------------------------------------------------------ matching one device


def test_a_group_member_matches_and_a_stranger_does_not() -> None:
    target = Followed(groups=("lobby", "hall"))
    assert matches(target, Facts(groups=frozenset({"hall"})))
    assert not matches(target, Facts(groups=frozenset({"attic"})))


def test_a_filter_needs_every_part() -> None:
    flt = DeviceFilter(fw_versions=("1.0", "1.1"), tags=("eu",), online=True)
    fits = Facts(fw="1.1", tags=frozenset({"eu", "beta"}), online=True)
    assert filter_matches(flt, fits)
    assert not filter_matches(flt, replace(fits, fw="2.0"))
    assert not filter_matches(flt, replace(fits, tags=frozenset({"us"})))
    assert not filter_matches(flt, replace(fits, online=False))
    assert filter_matches(DeviceFilter(online=False), Facts())


def test_followed_reads_the_task_documents_targets() -> None:
    doc = {
        "device_ids": 0,
        "groups": ["lobby"],
        "filter": {
            "fw_versions": ["1.0"],
            "sw_versions": [],
            "groups": ["hall"],
            "tags": ["eu"],
            "online": None,
        },
        "list_id": None,
    }
    target = followed(doc)
    assert target.groups == ("lobby",)
    assert target.group_names == frozenset({"lobby", "hall"})
    assert target.tag_names == frozenset({"eu"})
    assert followed({"groups": ["a"], "filter": None}).filter is None


def test_only_a_filter_naming_versions_or_presence_watches_those_facts() -> None:
    def watches(targets: dict[str, object]) -> bool:
        return followed(targets).watches_facts

    assert not watches({"groups": ["a"]})
    assert not watches({"filter": {"tags": ["eu"], "groups": ["hall"]}})
    assert watches({"filter": {"fw_versions": ["1.0"]}})
    assert watches({"filter": {"sw_versions": ["2.0"], "tags": ["eu"]}})
    assert watches({"filter": {"online": False}})


_names = st.frozensets(st.sampled_from(["a", "b", "c"]))


@given(
    groups=_names,
    tags=_names,
    fw=st.sampled_from([None, "1", "2"]),
    online=st.booleans(),
    want_groups=_names,
    want_tags=_names,
    want_fw=st.frozensets(st.sampled_from(["1", "2"])),
    want_online=st.sampled_from([None, True, False]),
)
def test_one_device_matches_as_the_registry_resolves_a_filter(
    groups: frozenset[str],
    tags: frozenset[str],
    fw: str | None,
    online: bool,
    want_groups: frozenset[str],
    want_tags: frozenset[str],
    want_fw: frozenset[str],
    want_online: bool | None,
) -> None:
    # Registry.matching intersects one set per part; a device is in a part's set when it
    # has any of the part's values.
    flt = DeviceFilter(
        fw_versions=tuple(sorted(want_fw)),
        groups=tuple(sorted(want_groups)),
        tags=tuple(sorted(want_tags)),
        online=want_online,
    )
    parts = [
        not want_fw or fw in want_fw,
        not want_groups or bool(groups & want_groups),
        not want_tags or bool(tags & want_tags),
        want_online is None or online is want_online,
    ]
    facts = Facts(fw=fw, groups=groups, tags=tags, online=online)
    assert filter_matches(flt, facts) is all(parts)
