"""Rollback decisions, pure: whether a package may undo a task's, which devices a
rollback takes, and the rollback task's own policy and source-version rule.

Everything here is a function of plain data; `scheduler.rollbacks` reads Redis, claims
the link and creates the rollback task with what these functions decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ota.catalog import FailureCause
from scheduler.errors import ValidationError
from scheduler.packages import Package

# The failed confirmations `rollback_on_failed_confirmation` rolls back: the device runs
# the new version but judged it unhealthy, or came back on its old one by itself.
FAILED_CONFIRMATION = frozenset(
    {int(FailureCause.HEALTH_CHECK_FAILED), int(FailureCause.ROLLED_BACK)}
)

# What a rollback task does not inherit from the task it undoes: it runs at once, in one
# wave, to the end, succeeds on the reported version (the old firmware may predate health
# confirmation), and is not itself rolled back.
_NOT_INHERITED = frozenset(
    {
        "schedule_time_ms",
        "waves",
        "abort",
        "continuous",
        "end_time_ms",
        "success",
        "rollback_package_id",
        "rollback_on_abort",
        "rollback_on_failed_confirmation",
    }
)
_FIELD = "policy.rollback_package_id"


@dataclass(frozen=True, slots=True)
class RollbackOf:
    """A rollback task to create: its id (claimed before it exists), the task it rolls
    back and the version it undoes."""

    task_id: str
    of: str
    undoes_version: str


def unknown_rollback_package(package_id: str) -> ValidationError:
    return ValidationError(
        f"rollback package {package_id!r} does not exist",
        code="unknown_rollback_package",
        field=_FIELD,
    )


def check_rollback_package(rollback: Package, target: Package) -> None:
    """A rollback package installs where the task's package did: same type and product,
    and another version (the same one would undo nothing)."""
    if rollback.type is not target.type:
        raise ValidationError(
            f"rollback package {rollback.id!r} is a {rollback.type.value} package; "
            f"the task's is {target.type.value}",
            code="wrong_rollback_type",
            field=_FIELD,
        )
    if rollback.product and target.product and rollback.product != target.product:
        raise ValidationError(
            f"rollback package {rollback.id!r} is for product {rollback.product!r}; "
            f"the task's is for {target.product!r}",
            code="wrong_rollback_product",
            field=_FIELD,
        )
    if rollback.version == target.version:
        raise ValidationError(
            f"rollback package {rollback.id!r} has the task's target version "
            f"{target.version!r}; a rollback installs another version",
            code="same_rollback_version",
            field=_FIELD,
        )


def rollback_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The rollback task's policy: the original's pacing, retries and timeouts only."""
    return {k: v for k, v in policy.items() if k not in _NOT_INHERITED}


def rollback_sources(allowed: Iterable[str], target_version: str) -> tuple[str, ...]:
    """The rollback package's source versions plus the version it undoes: a package
    that names its sources would otherwise refuse the very devices it exists for. An
    empty list already allows any source."""
    sources = tuple(allowed)
    if not sources or target_version in sources:
        return sources
    return (*sources, target_version)


def rolled_back_by_cause(cause: int | None, on_failed_confirmation: bool) -> bool:
    """Whether a failed device joins the rollback."""
    return on_failed_confirmation and cause is not None and cause in FAILED_CONFIRMATION
