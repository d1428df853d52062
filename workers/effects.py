"""What the state machine asks the shell to do, as data.

Ids are deterministic: `<ref>-<index>`, where `ref` names the inbox record that caused
the effect (`<partition>-<offset>`) and `index` its place among that record's effects,
so a replay or a redelivery produces records with the same ids and consumers deduplicate.
One exception: an upgrade sent again after a reconnect keeps the id of the first (the
device's command id), so a device that has it recognises the repeat.

Named tuples, like the machine's other values (`workers.model`): a few per record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ota.records import JobSpec


class SendVersionQuery(NamedTuple):
    id: str
    task_id: str


class SendUpgrade(NamedTuple):
    """An upgrade command; the shell mints its token, valid until `token_expires_s`."""

    id: str
    spec: JobSpec
    token_expires_s: int


class EmitJobEvent(NamedTuple):
    """A transition, or a timeline note when `from_state == to_state`."""

    id: str
    task_id: str
    attempt: int
    job_version: int
    from_state: str
    to_state: str
    cause: int | None
    detail: Mapping[str, Any]


Effect = SendVersionQuery | SendUpgrade | EmitJobEvent
