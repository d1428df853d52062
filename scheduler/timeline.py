"""A device's timeline entries as stored in Redis, and where its older history is.

Pure: no I/O. An entry is a job event in a compact form: a JSON array in a fixed field
order, the states as their persisted codes (`ota.jobstates.STATE_CODES`; a name without
a code as it is), trailing empty fields left off, without what can be derived when it is
read (the cause's message, and most often the task id). A timeline of a few entries is
most of a finished device's memory.

The task id is the same in most of a device's entries, so an entry leaves it out when the
entry below it (the next older one) is of the same task: the short form
`[id, at_ms, attempt, job_version, from, to, detail, cause]`; the full form puts the task
id first, `[task_id, id, at_ms, ...]`. A short entry's task is the task of the nearest
older full one; the oldest entry kept is always full (trimming to the cap turns a short
one that became the oldest into its full form). Only a task id of letters, digits and
`_ . : -` is ever left out (its JSON is the id in quotes, which the Redis script splices
in); an event of any other task is stored full. The same event always gives the same
bytes in each form, and a replayed event is looked for in both (`forms`). The event id
is kept: the workers form it from the inbox record that caused the event
(`w<partition>-<offset>-<index>`, workers/effects.py), which nothing else in the entry
tells.

A try that succeeded is folded into one entry as it closes, its summary: the result's
full entry (detail and cause padded in) followed by the try's earlier entries as steps,
`[job_version, from, to, ms before the result]` and the cause when there is one (a retry's),
oldest first. The API shows the steps as entries again, without their event ids and
details (those are in the log, `GET /v1/devices/{id}/history`). A summary is
the only entry whose JSON ends in `]]`.

Entries stored before this form are read as well: objects as the API shows them, and
arrays `[id, at_ms, task_id, attempt, job_version, from, to, cause, detail]` with the
states as codes or names. The forms differ in their first fields' types: the full form's
second field is a string (the event id), the older array's third (the task id), the
short form's are numbers.

Redis holds each device's newest entries only (`OTA_TIMELINE_CAP`), and only for
`OTA_TIMELINE_RETENTION_S` after the newest; the full history stays in the job-events
topic, one partition per device. The device hash remembers the log position of the first
job event applied for the device (`tl_log`, "<partition>/<offset>"), how many entries
were trimmed (`tl_cut`) and whether older ones expired (`tl_expired`), and the API
answers them as `history`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ota.catalog import FailureCause
from ota.jobstates import STATE_CODES
from ota.records import JobEventRecord

# The API's fields of an entry, in the order it shows them.
FIELDS = ("id", "at_ms", "task_id", "attempt", "job_version", "from", "to", "cause", "detail")
# The short form's fields; a trailing None cause, then an empty detail, are left off.
SHORT = ("id", "at_ms", "attempt", "job_version", "from", "to", "detail", "cause")
_SHORT_REQUIRED = 6  # id .. to
_OLDER_REQUIRED = 7  # the older array: id .. to
# A summary's step: job_version, from, to, ms before the result, then the cause if any.
_STEP_FIELDS = (4, 5)
# A task id whose JSON is itself in quotes: the only kind an entry leaves out (the Redis
# script's pattern `[%w_.:%-]` is the same set).
PLAIN_TASK = re.compile(r"[A-Za-z0-9_.:\-]+")

_CODES = {state.value: code for state, code in STATE_CODES.items()}
_NAMES = {code: name for name, code in _CODES.items()}
# States that close a try: its result is the entry that before-result facts go below.
_CLOSING = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "WAITING_RETRY"})
# How far below the closing entry a before-result download fact goes (started first).
_BEFORE_RESULT = {"DOWNLOADING": "0.6666", "DOWNLOADED": "0.3333"}


class BadEntryError(ValueError):
    """A stored timeline entry of no known form, or a short one with no task below it."""


def forms(event: JobEventRecord) -> tuple[bytes, bytes]:
    """(full, short): the event's entry with and without its task id; the same event, the
    same bytes. `short` is `full` when the task id is not plain (it is never left out)."""
    values: list[Any] = [
        event.id,
        event.at_ms,
        event.attempt,
        event.job_version,
        _CODES.get(event.from_state, event.from_state),
        _CODES.get(event.to_state, event.to_state),
        dict(event.detail),
        event.cause,
    ]
    if values[-1] is None:
        values.pop()
        if not values[-1]:
            values.pop()
    short = orjson.dumps(values)
    full = b"[" + orjson.dumps(event.task_id) + b"," + short[1:]
    return full, (short if PLAIN_TASK.fullmatch(event.task_id) else full)


def encode(event: JobEventRecord) -> bytes:
    """The event's full entry (the task id in it), as an entry with no older entry of its
    task below it is stored; the same event, the same bytes."""
    return forms(event)[0]


def decode(raw: bytes, task_id: str | None = None) -> dict[str, Any]:
    """A stored entry as the API shows it (`cause_message` derived from the cause);
    `task_id`: the task of the entry below it, which a short entry is of. A summary is
    shown as its result."""
    return _read(raw, task_id)[0][0]


def decode_all(entries: Sequence[bytes]) -> list[dict[str, Any]]:
    """A timeline, newest first, as the API shows it: each short entry of the task of the
    nearest older entry that names one, each summary as its result and its steps."""
    shown: list[dict[str, Any]] = []
    task_id: str | None = None
    for raw in reversed(entries):
        read, task_id = _read(raw, task_id)
        shown.extend(reversed(read))
    shown.reverse()
    return shown


def _read(raw: bytes, below: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The entries as the API shows them, newest first (more than one for a summary), and
    the task id (for the entry above)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEntryError(f"timeline entry is not JSON: {raw[:60]!r}") from exc
    if isinstance(value, dict):  # the object form: stored as the API shows it
        task = value.get("task_id")
        return [value], task if isinstance(task, str) else below
    if not isinstance(value, list) or len(value) < _SHORT_REQUIRED:
        raise BadEntryError(f"timeline entry has no known form: {raw[:60]!r}")
    entry: dict[str, Any] = dict.fromkeys(FIELDS)
    steps: list[Any] = []
    if isinstance(value[1], str):  # the full form: [task_id, id, at_ms, ...]
        if len(value) == len(SHORT) + 2 and raw.endswith(b"]]"):  # a summary
            steps = value.pop()
        if len(value) > len(SHORT) + 1:
            raise BadEntryError(f"timeline entry has no known form: {raw[:60]!r}")
        entry.update(zip(SHORT, value[1:], strict=False))
        entry["task_id"] = value[0]
    elif isinstance(value[2], str):  # the older array: [id, at_ms, task_id, ...]
        if not _OLDER_REQUIRED <= len(value) <= len(FIELDS):
            raise BadEntryError(f"timeline entry has no known form: {raw[:60]!r}")
        entry.update(zip(FIELDS, value, strict=False))
    else:  # the short form: the task of the entry below
        if len(value) > len(SHORT):
            raise BadEntryError(f"timeline entry has no known form: {raw[:60]!r}")
        if below is None:
            raise BadEntryError(f"short timeline entry with no task below it: {raw[:60]!r}")
        entry.update(zip(SHORT, value, strict=False))
        entry["task_id"] = below
    entry["from"], entry["to"] = _name(entry["from"], raw), _name(entry["to"], raw)
    entry["detail"] = entry["detail"] or {}
    entry["cause_message"] = cause_message(entry["cause"])
    shown = {key: entry[key] for key in (*FIELDS[:8], "cause_message", "detail")}
    return [shown, *_steps(steps, shown, raw)], entry["task_id"]


def _steps(steps: list[Any], result: dict[str, Any], raw: bytes) -> list[dict[str, Any]]:
    """A summary's steps as entries, newest first, of the result's task and attempt."""
    shown = []
    for step in reversed(steps):
        if not (isinstance(step, list) and len(step) in _STEP_FIELDS):
            raise BadEntryError(f"timeline summary has a step of no known form: {raw[:60]!r}")
        version, from_state, to_state, before, *why = step
        cause = why[0] if why else None
        if type(before) is not int or type(result["at_ms"]) is not int:
            raise BadEntryError(f"timeline summary has a step without a time: {raw[:60]!r}")
        if cause is not None and type(cause) is not int:
            raise BadEntryError(f"timeline summary has a step with a bad cause: {raw[:60]!r}")
        shown.append(
            {
                "id": None,
                "at_ms": result["at_ms"] - before,
                "task_id": result["task_id"],
                "attempt": result["attempt"],
                "job_version": version,
                "from": _name(from_state, raw),
                "to": _name(to_state, raw),
                "cause": cause,
                "cause_message": cause_message(cause),
                "detail": {},
            }
        )
    return shown


def _name(state: Any, raw: bytes) -> str:
    if isinstance(state, str):
        return state
    if type(state) is int and state in _NAMES:
        return _NAMES[state]
    raise BadEntryError(f"timeline entry has an unknown state {state!r}: {raw[:60]!r}")


def lua_state_tables() -> str:
    """The Redis script's view of the placement rules: `closing` (states that close a try)
    and `below` (a before-result fact's fraction), keyed by state name and by code."""
    closing = [f"{name} = true, [{_CODES[name]}] = true" for name in sorted(_CLOSING)]
    below = [f"{name} = {frac}, [{_CODES[name]}] = {frac}" for name, frac in _BEFORE_RESULT.items()]
    return f"local closing = {{{', '.join(closing)}}}\nlocal below = {{{', '.join(below)}}}"


def place(event: JobEventRecord) -> str:
    """Where the entry goes: '' in log order, 'close' (it closes a try: remember its
    place), or a fraction below the closing entry (a download fact from before it)."""
    if event.from_state != event.to_state and event.to_state in _CLOSING:
        return "close"
    if event.detail.get("before_result") is True:
        return _BEFORE_RESULT.get(event.to_state, "0.5")
    return ""


def log_position(partition: int | None, offset: int | None) -> str:
    """The `tl_log` value of an event read at (partition, offset); '' when unknown."""
    if partition is None or offset is None or partition < 0 or offset < 0:
        return ""
    return f"{partition}/{offset}"


def history(fields: Mapping[str, str], topic: str, held: int) -> dict[str, Any] | None:
    """Where the device's full history is: the job-events topic, the device's partition
    and the offset of its first event, how many entries the cap trimmed and whether older
    entries expired (`held`: the entries Redis holds now; none after a job event means
    they all expired); None before any job event with a known position was applied."""
    partition, sep, offset = fields.get("tl_log", "").partition("/")
    if not sep or not partition.isdigit() or not offset.isdigit():
        return None
    return {
        "topic": topic,
        "partition": int(partition),
        "first_offset": int(offset),
        "trimmed": int(fields.get("tl_cut", "0") or "0"),
        "expired": held == 0 or fields.get("tl_expired") == "1",
    }


def cause_message(cause: int | None) -> str | None:
    if cause is None:
        return None
    try:
        return FailureCause(cause).message
    except ValueError:
        return f"unknown cause {cause}"
