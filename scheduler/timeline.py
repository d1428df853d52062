"""A device's timeline entries as stored in Redis, and where its older history is.

Pure: no I/O. An entry is a job event in a compact form: a JSON array in a fixed field
order, the states as their persisted codes (`ota.jobstates.STATE_CODES`; a name without
a code as it is), trailing empty fields left off, without what can be derived when it is
read (the cause's message). The array keeps an entry under half the bytes of the API's object,
and a timeline of a few entries is most of a finished device's memory. The same event
always gives the same bytes (a replayed event must find its entry again). Entries
stored as objects, or as arrays with state names, before this form are read as well.

Redis holds each device's newest entries only (`OTA_TIMELINE_CAP`); the full history
stays in the job-events topic, one partition per device. The device hash remembers the
log position of the first job event applied for the device (`tl_log`,
"<partition>/<offset>") and how many entries were trimmed (`tl_cut`), and the API
answers them as `history`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ota.catalog import FailureCause
from ota.jobstates import STATE_CODES
from ota.records import JobEventRecord

# The stored array's fields, in order; a trailing None cause or empty detail is left off.
FIELDS = ("id", "at_ms", "task_id", "attempt", "job_version", "from", "to", "cause", "detail")
_REQUIRED = 7  # id .. to: an array shorter than this is not an entry

_CODES = {state.value: code for state, code in STATE_CODES.items()}
_NAMES = {code: name for name, code in _CODES.items()}
# States that close a try: its result is the entry that before-result facts go below.
_CLOSING = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "WAITING_RETRY"})
# How far below the closing entry a before-result download fact goes (started first).
_BEFORE_RESULT = {"DOWNLOADING": "0.6666", "DOWNLOADED": "0.3333"}


class BadEntryError(ValueError):
    """A stored timeline entry that is neither the array nor the object form."""


def encode(event: JobEventRecord) -> bytes:
    """A job event as stored on the device's timeline; the same event, the same bytes."""
    values: list[Any] = [
        event.id,
        event.at_ms,
        event.task_id,
        event.attempt,
        event.job_version,
        _CODES.get(event.from_state, event.from_state),
        _CODES.get(event.to_state, event.to_state),
        event.cause,
        dict(event.detail),
    ]
    while len(values) > _REQUIRED and values[-1] in (None, {}):
        values.pop()
    return orjson.dumps(values)


def decode(raw: bytes) -> dict[str, Any]:
    """A stored entry as the API shows it (`cause_message` derived from the cause)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEntryError(f"timeline entry is not JSON: {raw[:60]!r}") from exc
    if isinstance(value, dict):  # the object form: stored as the API shows it
        return value
    if not isinstance(value, list) or not _REQUIRED <= len(value) <= len(FIELDS):
        raise BadEntryError(f"timeline entry has no known form: {raw[:60]!r}")
    entry: dict[str, Any] = dict.fromkeys(FIELDS)
    entry.update(zip(FIELDS, value, strict=False))
    entry["from"], entry["to"] = _name(entry["from"], raw), _name(entry["to"], raw)
    entry["detail"] = entry["detail"] or {}
    entry["cause_message"] = cause_message(entry["cause"])
    return {key: entry[key] for key in (*FIELDS[:8], "cause_message", "detail")}


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


def history(fields: Mapping[str, str], topic: str) -> dict[str, Any] | None:
    """Where the device's full history is: the job-events topic, the device's partition
    and the offset of its first event, with how many entries Redis no longer holds;
    None before any job event with a known position was applied."""
    partition, sep, offset = fields.get("tl_log", "").partition("/")
    if not sep or not partition.isdigit() or not offset.isdigit():
        return None
    return {
        "topic": topic,
        "partition": int(partition),
        "first_offset": int(offset),
        "trimmed": int(fields.get("tl_cut", "0") or "0"),
    }


def cause_message(cause: int | None) -> str | None:
    if cause is None:
        return None
    try:
        return FailureCause(cause).message
    except ValueError:
        return f"unknown cause {cause}"
