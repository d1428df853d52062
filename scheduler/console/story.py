"""A device's timeline read as a story: its tries (task, attempt), oldest first, each a
list of steps in the order the job saw them, with the cause and IoTDA's message for a
failure and the bytes the edge served. Pure: the registry's entries in, plain data out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PHRASES = {
    "QUEUED": "Queued behind another task's job on this device",
    "WAITING_ONLINE": "Waiting for the device to come online",
    "QUERYING_VERSION": "Asked the device for its current version",
    "COMMAND_SENT": "Sent the upgrade command with a download URL",
    "DOWNLOADING": "The device started downloading from the edge",
    "DOWNLOADED": "The device finished downloading",
    "UPDATING": "The device is installing (update progress reported)",
    "VERIFYING": "Asked the device for its version to verify the upgrade",
    "CONFIRMING": "Installed; waiting for the device to confirm its health checks passed",
    "WAITING_RETRY": "Failed; waiting to try again",
    "SUCCEEDED": "Upgrade succeeded",
    "FAILED": "Upgrade failed",
    "CANCELLED": "Cancelled",
}


@dataclass(frozen=True)
class Step:
    at_ms: int
    state: str
    text: str
    cause: int | None = None
    cause_message: str | None = None
    bytes: int | None = None
    duration_ms: int | None = None
    note: str = ""
    outcome: str = ""  # "", "ok", "failed": how the step reads at a glance


@dataclass
class Try:
    task_id: str
    attempt: int
    steps: list[Step] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        finals = [s.state for s in self.steps if s.state in ("SUCCEEDED", "FAILED", "CANCELLED")]
        return finals[-1] if finals else "in progress"


def step(entry: Mapping[str, Any]) -> Step:
    state = str(entry.get("to") or "")
    detail: Mapping[str, Any] = entry.get("detail") or {}
    text = PHRASES.get(state, state.replace("_", " ").capitalize())
    notes = []
    if entry.get("from") == state and detail.get("note"):
        text = f"Noted: {str(detail['note']).replace('_', ' ')}"
    if detail.get("before_result"):
        notes.append("the edge's report arrived after the result; the download came before it")
    cause = entry.get("cause")
    size = detail.get("bytes")
    took = detail.get("duration_ms")
    outcome = "failed" if state in ("FAILED", "WAITING_RETRY") else ""
    if state == "SUCCEEDED":
        outcome = "ok"
    return Step(
        at_ms=int(entry.get("at_ms") or 0),
        state=state,
        text=text,
        cause=cause if isinstance(cause, int) else None,
        cause_message=entry.get("cause_message"),
        bytes=size if isinstance(size, int) else None,
        duration_ms=took if isinstance(took, int) else None,
        note="; ".join(notes),
        outcome=outcome,
    )


def story(timeline: Sequence[Mapping[str, Any]]) -> list[Try]:
    """Tries oldest first; `timeline` is the API's, newest first (the job's order)."""
    tries: list[Try] = []
    for entry in reversed(timeline):
        key = (str(entry.get("task_id") or ""), int(entry.get("attempt") or 0))
        if not tries or (tries[-1].task_id, tries[-1].attempt) != key:
            tries.append(Try(*key))
        tries[-1].steps.append(step(entry))
    return tries


def served_bytes(tries: Sequence[Try]) -> int:
    return sum(s.bytes or 0 for t in tries for s in t.steps)
