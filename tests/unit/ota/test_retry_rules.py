"""The retry decision (ota.retry_rules): without rules it is exactly the decision made before
rules existed; with them, the cause's rule beats its class's, which beats the task-wide
count; a backoff grows with the retries used and stops at its cap."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ota.catalog import CauseClass, FailureCause
from ota.records import MAX_RETRY_DELAY_S, JobSpec, PackageRef, RetryRule, TaskType
from ota.retry_rules import RULE_NAMES, delay_s, retry_after_s, rule_for

F = FailureCause
SPEC = JobSpec("t1", TaskType.FIRMWARE, PackageRef("ab" * 32, "2.0", "fw.bin", 1))
CAUSES = st.sampled_from(list(FailureCause))
TRIES = st.integers(0, 10)
NAMES = st.sampled_from(sorted(RULE_NAMES))
RULES = st.builds(
    RetryRule,
    on=NAMES,
    count=st.integers(0, 5),
    interval_s=st.integers(0, 86_400),
    factor=st.floats(1.0, 10.0),
    max_interval_s=st.integers(0, MAX_RETRY_DELAY_S),
)


def before_rules(spec: JobSpec, cause: FailureCause, tries: int) -> int | None:
    """The decision as workers/context.py made it before retry rules existed."""
    if cause.retryable and tries < spec.retry_count:
        return spec.retry_interval_s
    return None


@given(CAUSES, TRIES, st.integers(0, 5), st.integers(0, 86_400))
def test_a_spec_without_rules_decides_as_before(
    cause: FailureCause, tries: int, count: int, interval_s: int
) -> None:
    spec = replace(SPEC, retry_count=count, retry_interval_s=interval_s)
    assert retry_after_s(spec, cause, tries) == before_rules(spec, cause, tries)


@given(CAUSES, TRIES, st.lists(RULES, max_size=4))
def test_rules_for_other_causes_and_classes_leave_the_default(
    cause: FailureCause, tries: int, rules: list[RetryRule]
) -> None:
    mine = {cause.key, cause.cause_class.value}
    others = tuple(r for r in rules if r.on not in mine)
    spec = replace(SPEC, retry_count=3, retry_interval_s=60, retry_rules=others)
    assert retry_after_s(spec, cause, tries) == before_rules(spec, cause, tries)


@given(CAUSES, TRIES, RULES, RULES)
def test_the_causes_rule_beats_its_classs(
    cause: FailureCause, tries: int, own: RetryRule, of_class: RetryRule
) -> None:
    own = replace(own, on=cause.key)
    of_class = replace(of_class, on=cause.cause_class.value)
    for rules in ((own, of_class), (of_class, own)):
        assert rule_for(rules, cause) == own
    spec = replace(SPEC, retry_rules=(of_class, own))
    expected = delay_s(own, tries) if tries < own.count else None
    assert retry_after_s(spec, cause, tries) == expected


def test_a_class_rule_reaches_causes_retrying_cannot_help_by_default() -> None:
    spec = replace(SPEC, retry_count=5, retry_rules=(RetryRule("device_error", 2, 30),))
    assert not F.NOT_ENOUGH_STORAGE.retryable
    assert retry_after_s(spec, F.NOT_ENOUGH_STORAGE, 0) == 30
    assert retry_after_s(spec, F.NOT_ENOUGH_STORAGE, 2) is None
    # Naming the cause with count 0 keeps it never retried.
    never = replace(spec, retry_rules=(*spec.retry_rules, RetryRule("not_enough_storage", 0)))
    assert retry_after_s(never, F.NOT_ENOUGH_STORAGE, 0) is None
    assert retry_after_s(never, F.LOW_BATTERY, 0) == 30


def test_a_rule_can_retry_one_cause_and_never_another() -> None:
    spec = replace(
        SPEC,
        retry_count=0,
        retry_rules=(RetryRule("offline", 5, 600), RetryRule("device_busy", 0)),
    )
    assert retry_after_s(spec, F.ONLINE_TIMEOUT, 4) == 600
    assert retry_after_s(spec, F.DEVICE_NOT_ONLINE, 5) is None
    assert retry_after_s(spec, F.DEVICE_BUSY, 0) is None
    assert retry_after_s(spec, F.POOR_SIGNAL, 0) is None  # the task-wide count: 0


@given(RULES, st.integers(0, 9))
def test_a_backoff_grows_with_the_retries_used_up_to_its_cap(rule: RetryRule, tries: int) -> None:
    now, later = delay_s(rule, tries), delay_s(rule, tries + 1)
    assert 0 <= now <= later <= rule.max_interval_s
    if rule.factor == 1.0:
        assert now == min(rule.interval_s, rule.max_interval_s)


def test_a_growing_backoff_schedule() -> None:
    rule = RetryRule("timeout", 5, interval_s=60, factor=2.0, max_interval_s=300)
    assert [delay_s(rule, n) for n in range(5)] == [60, 120, 240, 300, 300]


def test_every_cause_has_a_class_and_rule_names_do_not_clash() -> None:
    keys = {c.key for c in FailureCause}
    assert len(keys) == len(FailureCause)
    assert not keys & set(CauseClass)
    assert keys | set(CauseClass) == RULE_NAMES
    assert {c.cause_class for c in FailureCause} == set(CauseClass)
    assert F.ONLINE_TIMEOUT.cause_class is CauseClass.OFFLINE
    assert F.DEVICE_NOT_ONLINE.cause_class is CauseClass.OFFLINE
    assert F.VERIFY_TIMEOUT.cause_class is CauseClass.TIMEOUT
    assert F.INVALID_URI.cause_class is CauseClass.DEVICE_ERROR
    assert F.TASK_CONFLICT.cause_class is CauseClass.PLATFORM_ERROR
    assert F.SOURCE_VERSION_NOT_ALLOWED.cause_class is CauseClass.PLATFORM_ERROR


def test_the_protocol_docs_list_every_cause_with_its_name_class_and_default() -> None:
    text = (Path(__file__).parents[3] / "docs" / "protocol.md").read_text()
    table = text.split("### Failure causes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (\w+) \| (yes|no) \|$", table, re.MULTILINE)
    assert rows == [
        (str(c.value), c.key, c.cause_class.value, "yes" if c.retryable else "no")
        for c in FailureCause
    ]
