"""Applies one poll batch of a partition's inbox records to the device states it touches.

Pure apart from minting tokens (a pure function of the keys and the record's time):
given the states read from Redis and the records, it returns the states to write, the
deadlines to move and the records to produce. The record's time is `at_ms`, or the Kafka
timestamp when a producer left it at 0; both are in the log, so a replay sees the same.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import NamedTuple

from ota.records import DeadLetterRecord, JobEventRecord, JobSpec, RecordError, decode_inbox, encode
from ota.settings import CommonSettings
from workers.codec import SpecRef, StateCorruptError, pack, spec_refs, unpack
from workers.events import InvalidEventError, Kind, event_from_record
from workers.machine import step
from workers.model import Device
from workers.outputs import to_record

COMMANDS, JOB_EVENTS, DEAD_LETTERS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class InboxItem:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


# Outputs and device writes are named tuples, like the machine's values (workers.model):
# the batch builds one or more per record.
class Output(NamedTuple):
    topic: int  # COMMANDS, JOB_EVENTS or DEAD_LETTERS
    key: bytes
    value: bytes


class DeviceWrite(NamedTuple):
    device_id: str
    value: bytes
    expire_at_ms: int  # 0: keep for good (a job still needs the device)
    deadline_ms: int | None


@dataclass(frozen=True, slots=True)
class SpecWrite:
    """A shared spec the batch's devices refer to: stored if absent; `refs` changes its
    count of in-flight devices; `expire_floor_ms` (0: none) is the latest expiry of a
    finished device referring to it. Once no in-flight device refers to it, it expires
    with the last of those, so it never outlives or underlives a device that needs it."""

    ref: SpecRef
    refs: int
    expire_floor_ms: int


@dataclass(slots=True)
class BatchResult:
    writes: list[DeviceWrite] = field(default_factory=list)
    specs: list[SpecWrite] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    transitions: int = 0
    dead_letters: int = 0
    events: list[JobEventRecord] = field(default_factory=list)  # for the service's log


@dataclass(slots=True)
class _Touched:
    device: Device
    changed: bool
    last_ms: int
    before: dict[str, SpecRef]  # the specs the stored state referred to
    was_active: bool


def device_ids(items: list[InboxItem]) -> list[str]:
    """The device keys a batch may touch (records without a usable key touch none)."""
    seen: dict[str, None] = {}
    for item in items:
        if item.key:
            try:
                seen[item.key.decode()] = None
            except UnicodeDecodeError:
                continue
    return list(seen)


def apply_batch(
    settings: CommonSettings,
    topic: str,
    partition: int,
    items: list[InboxItem],
    stored: dict[str, bytes | None],
    specs: dict[str, JobSpec],
    retention_ms: int,
) -> BatchResult:
    """`specs` holds the specs the stored states refer to, by digest."""
    result = BatchResult()
    touched: dict[str, _Touched] = {}
    floors: dict[str, int] = {}
    shared: dict[str, SpecRef] = {}
    for item in items:
        try:
            record = decode_inbox(item.value or b"")
            if item.key is None or item.key != record.device_id.encode():
                raise RecordError("key_mismatch", "record key is not the record's device_id")
            event = event_from_record(record)
        except (RecordError, InvalidEventError) as exc:
            _dead_letter(result, item, _origin(topic, partition, item), exc.reason, exc.message)
            continue
        device_id = record.device_id
        entry = touched.get(device_id)
        if entry is None:
            loaded = _load(result, item, topic, partition, stored.get(device_id), specs)
            entry = _Touched(loaded, False, 0, spec_refs(loaded), loaded.active)
            touched[device_id] = entry
        now_ms = record.at_ms or item.timestamp_ms
        outcome = step(
            entry.device, event, now_ms, f"w{partition}-{item.offset}", settings.token_lifetime_s
        )
        # A timeout always rewrites the device's deadline: the sweeper popped it. (The
        # identity test first: an unchanged device comes back as the same object.)
        device = outcome.device
        if (device is not entry.device and device != entry.device) or event.kind is Kind.TIMEOUT:
            # Expiry counts from the last record that changed the state, so it does not
            # depend on how records were grouped into batches (a rebuild groups them anew).
            entry.changed = True
            entry.last_ms = now_ms
            if not device.active:
                # Per record, not per batch: a rebuild batches differently, same floors.
                for digest, ref in spec_refs(device).items():
                    floors[digest] = max(floors.get(digest, 0), now_ms + retention_ms)
                    shared[digest] = ref
        entry.device = device
        for effect in outcome.effects:
            out = to_record(settings, device_id, effect, now_ms)
            if isinstance(out, JobEventRecord):
                result.transitions += out.from_state != out.to_state
                result.events.append(out)
                result.outputs.append(Output(JOB_EVENTS, item.key, encode(out)))
            else:
                result.outputs.append(Output(COMMANDS, item.key, encode(out)))
    counts: dict[str, int] = {}
    for device_id, entry in touched.items():
        if not entry.changed:
            continue
        device = entry.device
        active = device.active
        result.writes.append(
            DeviceWrite(
                device_id,
                pack(device),
                0 if active else entry.last_ms + retention_ms,
                device.deadline_ms,
            )
        )
        # The stored state's specs lose this device's reference and the new state's gain
        # it (an inactive state holds none); in this order, which `result.specs` keeps.
        _count(counts, shared, entry.before, -1 if entry.was_active else 0)
        _count(counts, shared, spec_refs(device), 1 if active else 0)
    result.specs = [SpecWrite(ref, counts.get(d, 0), floors.get(d, 0)) for d, ref in shared.items()]
    return result


def _count(
    counts: dict[str, int], shared: dict[str, SpecRef], refs: dict[str, SpecRef], change: int
) -> None:
    shared.update(refs)
    for digest in refs:
        counts[digest] = counts.get(digest, 0) + change


def _origin(topic: str, partition: int, item: InboxItem) -> str:
    """Where a record came from, for its dead letter (built only for those)."""
    return f"{topic}/{partition}/{item.offset}"


def _load(
    result: BatchResult,
    item: InboxItem,
    topic: str,
    partition: int,
    raw: bytes | None,
    specs: dict[str, JobSpec],
) -> Device:
    if raw is None:
        return Device()
    try:
        return unpack(raw, specs)
    except StateCorruptError as exc:
        # The record still applies, to a fresh state; `rebuild` restores the lost one.
        _dead_letter(result, item, _origin(topic, partition, item), "state_corrupt", str(exc))
        return Device()


def _dead_letter(
    result: BatchResult, item: InboxItem, origin: str, reason: str, message: str
) -> None:
    key = None if item.key is None else item.key.decode("utf-8", "replace")
    record = DeadLetterRecord(
        source="worker",
        reason=reason,
        message=message,
        raw_b64=base64.b64encode(item.value or b"").decode("ascii"),
        origin=origin,
        key=key,
        id=f"w{origin.rsplit('/', 2)[-2]}-{item.offset}-dl",
        at_ms=item.timestamp_ms,
    )
    result.outputs.append(Output(DEAD_LETTERS, b"worker", encode(record)))
    result.dead_letters += 1
