"""A task's targets as the API takes them: device ids, groups, a filter, an uploaded list.

Pure parsing here (`parse_targets`) and the task document's form of them (`targets_json`);
the task service resolves the parts against the registry. Parts combine as a union; the
resolved set must not be empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

from ota.protocol import ProtocolError, check_device_id
from scheduler.devices import NAME, DeviceFilter
from scheduler.errors import ValidationError
from scheduler.fields import Obj
from scheduler.taskdoc import TaskFilter, TaskTargets

MAX_IDS = 30_000  # IoTDA's per-request limit; larger sets come as an uploaded list
MAX_LIST_IDS = 1_000_000


@dataclass(frozen=True, slots=True)
class Targets:
    device_ids: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    filter: DeviceFilter | None = None
    list_id: str | None = None


def check_ids(ids: list[Any] | tuple[Any, ...], field: str) -> tuple[str, ...]:
    for i, value in enumerate(ids):
        if not isinstance(value, str):
            raise ValidationError(
                f"{field}[{i}] must be a string", code="bad_device_id", field=f"{field}[{i}]"
            )
        try:
            check_device_id(value)
        except ProtocolError as exc:
            raise ValidationError(
                f"{field}[{i}]: {exc.message}", code="bad_device_id", field=f"{field}[{i}]"
            ) from None
    return tuple(dict.fromkeys(ids))


def _names(o: Obj, name: str, max_items: int) -> tuple[str, ...]:
    values = o.strings(name, max_items=max_items, max_len=64)
    for v in values:
        if not NAME.fullmatch(v):
            raise ValidationError(
                f"{o.path(name)} has a malformed name {v[:70]!r}",
                code="bad_name",
                field=o.path(name),
            )
    return values


def parse_filter(data: Any, where: str) -> DeviceFilter:
    f = Obj(data, where, frozenset({"fw_versions", "sw_versions", "groups", "tags", "online"}))
    online = f.raw("online", None)
    if online is not None and not isinstance(online, bool):
        raise ValidationError(
            f"{where}.online must be true or false", code="wrong_type", field=f"{where}.online"
        )
    flt = DeviceFilter(
        fw_versions=f.strings("fw_versions", max_items=100),
        sw_versions=f.strings("sw_versions", max_items=100),
        groups=_names(f, "groups", 100),
        tags=_names(f, "tags", 100),
        online=online,
    )
    if flt.empty:
        raise ValidationError(
            f"{where} selects nothing: give fw_versions, sw_versions, groups, tags or online",
            code="bad_filter",
            field=where,
        )
    return flt


def parse_targets(data: Any) -> Targets:
    t = Obj(data, "targets", frozenset({"device_ids", "groups", "filter", "list_id"}))
    ids = check_ids(t.array("device_ids", [], max_items=MAX_IDS), "targets.device_ids")
    groups = _names(t, "groups", 100)
    flt = parse_filter(t.raw("filter"), "targets.filter") if t.has("filter") else None
    list_id = t.text("list_id", None, max_len=64)
    if not ids and not groups and flt is None and list_id is None:
        raise ValidationError(
            "targets is empty: give device_ids, groups, filter or list_id",
            code="empty_targets",
            field="targets",
        )
    return Targets(ids, groups, flt, list_id)


def targets_json(targets: Targets) -> TaskTargets:
    """The targets as the task document keeps them: how many ids were listed, not the ids
    (the task's device list has them); `matching.followed` reads the groups and filter."""
    return {
        "device_ids": len(targets.device_ids),
        "groups": list(targets.groups),
        "filter": None if targets.filter is None else cast(TaskFilter, asdict(targets.filter)),
        "list_id": targets.list_id,
    }


def check_followable(targets: Targets) -> None:
    """A continuous task follows groups and filters only (parse_targets made sure it has
    one of them): a fixed id list has no one to add or remove."""
    if targets.device_ids or targets.list_id is not None:
        raise ValidationError(
            "a continuous task targets groups or a filter only, not device_ids or list_id",
            code="continuous_targets",
            field="policy.continuous",
        )
