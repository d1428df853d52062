"""What the state machine asks the shell to do, as data.

Ids are deterministic: `<ref>-<index>`, where `ref` names the inbox record that caused
the effect (`<partition>-<offset>`) and `index` its place among that record's effects,
so a replay or a redelivery produces records with the same ids and consumers deduplicate.
One exception: an upgrade sent again after a reconnect keeps the id of the first (the
device's command id), so a device that has it recognises the repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ota.records import JobSpec


@dataclass(frozen=True, slots=True)
class SendVersionQuery:
    id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class SendUpgrade:
    """An upgrade command; the shell mints its token, valid until `token_expires_s`."""

    id: str
    spec: JobSpec
    token_expires_s: int


@dataclass(frozen=True, slots=True)
class EmitJobEvent:
    """A transition, or a timeline note when `from_state == to_state`."""

    id: str
    task_id: str
    attempt: int
    job_version: int
    from_state: str
    to_state: str
    cause: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


Effect = SendVersionQuery | SendUpgrade | EmitJobEvent
