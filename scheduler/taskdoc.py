"""The task document, typed: the JSON a task is stored as, at Redis key `keys.task(tid)`
and on the compacted topic `ota.tasks` (key = task id, the system of record that
scheduler/rebuild.py restores Redis from). `Tasks.create` writes it, `Tasks.update` changes
it; the reconciler, rollbacks, notifications and the console read it.

Rules of this module:
1. The types describe the stored JSON field for field and check nothing at run time:
   `load_task` is `orjson.loads` and a cast, so a document decodes exactly as it did
   untyped. A field some documents lack is NotRequired.
2. A field changes here and where it is written (`Tasks.create`, `targets.targets_json`,
   `Rollbacks._link`) together; documents already on the topic keep their old shape, so a
   new field is NotRequired.
3. The policy stays `dict[str, Any]`: scheduler/policy.py owns its shape (`policy_json`
   writes it, `parse_policy` reads it back).
4. A leaf: imports nothing of the scheduler, so every scheduler module may use it.

API answers built from the document (`Tasks.view`, webhook events) are not `TaskDoc`s.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

import orjson


class TaskPackage(TypedDict):
    """The package a task installs, `asdict(Package.ref())`: an `ota.records.PackageRef`
    as JSON (`reconciler.job_spec` builds the PackageRef back from it)."""

    sha256: str
    version: str
    file_name: str
    file_size: int
    custom_info: str
    allowed_sources: list[str]  # a tuple in the PackageRef, a list once stored
    # Absent from documents written before signed packages; PackageRef defaults them.
    signature: NotRequired[str]
    key_id: NotRequired[str]


class TaskFilter(TypedDict):
    """`targets.filter`: the task's `devices.DeviceFilter` as JSON."""

    fw_versions: list[str]
    sw_versions: list[str]
    groups: list[str]
    tags: list[str]
    online: bool | None


class TaskTargets(TypedDict):
    """What the task was asked to target; the resolved devices are the task's device list."""

    device_ids: int  # how many ids the request listed, not the ids
    groups: list[str]
    filter: TaskFilter | None
    list_id: str | None


class TaskDoc(TypedDict):
    id: str
    name: str
    type: str  # an ota.records.TaskType value
    package_id: str
    package: TaskPackage
    policy: dict[str, Any]  # policy_json's form
    targets: TaskTargets
    devices: int  # resolved at creation; a continuous task's list grows past it
    preview: dict[str, int]  # DryRuns.judge's counts at creation
    status: str  # a taskstatus.TaskStatus value
    reason: str
    created_ms: int
    updated_ms: int
    rollback_of: NotRequired[str]  # on a rollback task: the task it rolls back
    rollback_task_id: NotRequired[str]  # on a task once its rollback exists (rollbacks.py)


def load_task(raw: bytes | str) -> TaskDoc:
    """A stored task document (Redis or the tasks topic), decoded."""
    return cast(TaskDoc, orjson.loads(raw))
