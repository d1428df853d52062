"""Pure rendering for the `ota` CLI: tables, progress bars, the `tasks watch` screen."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

STATUSES = ("Waiting", "Processing", "Success", "Fail", "FailWaitRetry", "Stopped")
FINISHED = frozenset({"Success", "Fail", "PartialSuccess", "Stopped"})


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table with a header; '(none)' when empty."""
    if not rows:
        return "(none)"
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def bar(part: int, whole: int, width: int = 30) -> str:
    filled = 0 if whole <= 0 else min(width, round(width * part / whole))
    return "#" * filled + "." * (width - filled)


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def task_screen(task: Mapping[str, Any]) -> list[str]:
    """The `tasks watch` view: status, a bar per device status, failure causes."""
    progress = task.get("progress") or {}
    total = int(progress.get("total") or 0)
    statuses = (task.get("counts") or {}).get("statuses") or {}
    runtime = task.get("runtime") or {}
    waves = task.get("waves") or []
    lines = [
        f"task {task.get('id')}  {task.get('name') or ''}".rstrip(),
        f"status {task.get('status')}"
        + (f" ({task['reason']})" if task.get("reason") else "")
        + f"   wave {runtime.get('current_wave', 1)}/{len(waves) + 1}"
        + f"   released {runtime.get('released', 0)}/{total}"
        + f"   done {progress.get('percent', 0)}%",
    ]
    follow = task.get("continuous")
    if follow:
        until = f"until {when(follow['end_time_ms'])}" if follow.get("end_time_ms") else ""
        state = ("open " + (until or "until cancelled")) if follow.get("open") else "closed"
        lines.append(
            f"continuous: {state}   joined {follow.get('joined', 0)}"
            f"   removed before release {follow.get('removed', 0)}"
        )
    rollback = task.get("rollback")
    if rollback:
        done = (rollback.get("progress") or {}).get("percent", 0)
        lines.append(f"rolled back by task {rollback['id']}: {rollback['status']}, done {done}%")
    if task.get("rollback_of"):
        lines.append(f"rollback of task {task['rollback_of']}")
    for name in STATUSES:
        n = int(statuses.get(name, 0))
        lines.append(f"  {name:<14} [{bar(n, total)}] {n:>8}")
    causes = task.get("failure_causes") or []
    if causes:
        lines.append("failure causes:")
        lines += [f"  {c['count']:>8}  {c['code']:>3}  {c['message']}" for c in causes]
    return lines


def device_screen(device: Mapping[str, Any]) -> list[str]:
    job = device.get("current_job") or {}
    lines = [
        f"device {device.get('device_id')}",
        f"  firmware {cell(device.get('fw_version'))}   software {cell(device.get('sw_version'))}"
        f"   online {cell(device.get('online'))}   last seen {when(device.get('last_seen_ms'))}",
        f"  groups {cell(device.get('groups'))}   tags {cell(device.get('tags'))}",
    ]
    if job:
        lines.append(
            f"  current job: task {job.get('task_id')} attempt {job.get('attempt')} "
            f"{job.get('state')}"
            + (f" - {job['cause_message']}" if job.get("cause_message") else "")
        )
    timeline = device.get("timeline") or []
    if timeline:
        lines.append("timeline (newest first):")
        for e in timeline:
            cause = f"  {e['cause_message']}" if e.get("cause_message") else ""
            lines.append(
                f"  {when(e.get('at_ms'))}  task {str(e.get('task_id'))[:12]} #{e.get('attempt')}"
                f"  {e.get('from')} -> {e.get('to')}{cause}"
            )
    history = device.get("history") or {}
    older = []
    if history.get("trimmed"):
        older.append(f"{history['trimmed']} older entries")
    if history.get("expired"):
        older.append("entries past their retention")
    if older:
        lines.append(
            f"  ... {' and '.join(older)}: {history.get('topic')} partition "
            f"{history.get('partition')}, the device's records from offset "
            f"{history.get('first_offset')} (ota devices history {device.get('device_id')})"
        )
    return lines
