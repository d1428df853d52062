"""Whether, and when, a failed try of a device's job is tried again. Pure.

A job spec holds the task's retry rules (`JobSpec.retry_rules`): each names a failure
cause (`FailureCause.key`, e.g. `low_battery`) or a class of causes (`CauseClass`, e.g.
`offline`). The most specific rule decides: the cause's own, else its class's. With no
rule for either, the task-wide `retry_count` and `retry_interval_s` apply, and only to the
causes retrying can help (`FailureCause.retryable`), as before rules existed: a spec
without rules decides exactly as then.

`tries` is the retries the job has used so far, whatever their causes: a rule's `count`
bounds the retries a job may have had when it fails with that cause, and its backoff
grows with them (`interval_s * factor ** tries`, capped at `max_interval_s`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ota.catalog import CauseClass, FailureCause
from ota.records import JobSpec, RetryRule

# Every name a rule may carry in `on`: the causes' keys and the classes' values.
RULE_NAMES: frozenset[str] = frozenset(c.key for c in FailureCause) | frozenset(CauseClass)


def rule_for(rules: Iterable[RetryRule], cause: FailureCause) -> RetryRule | None:
    """The rule that decides for `cause`: its own, else its class's, else None."""
    by_name = {rule.on: rule for rule in rules}
    return by_name.get(cause.key) or by_name.get(cause.cause_class.value)


def delay_s(rule: RetryRule, tries: int) -> int:
    """Seconds to wait before the retry that follows `tries` earlier ones."""
    grown = rule.interval_s * rule.factor**tries
    return int(min(grown, rule.max_interval_s))


def retry_after_s(spec: JobSpec, cause: FailureCause, tries: int) -> int | None:
    """Seconds until the job is tried again after failing with `cause`, or None: it fails."""
    rule = rule_for(spec.retry_rules, cause)
    if rule is None:
        if cause.retryable and tries < spec.retry_count:
            return spec.retry_interval_s
        return None
    return delay_s(rule, tries) if tries < rule.count else None
