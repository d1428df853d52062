"""The apply pipeline (workers/apply.py) on the real Redis: a write that finds its
partition's offset moved by another owner is recomputed from the new offset, and the
partition ends as if one owner had applied every record in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis
from workerkit import make_settings, spec

from ota.metrics import REGISTRY
from ota.records import DeviceEventRecord, InboxRecord, JobStartRecord, PresenceRecord, encode
from ota.settings import Topics
from workers.apply import apply_partition
from workers.batch import InboxItem
from workers.rebuild import dump_partition
from workers.store import Snapshot, Store

DEVICE = "dev-apply-1"
AT_MS = 1_800_000_000_000  # the machine reads only the times in the records: a fixed one


def _items() -> list[InboxItem]:
    records: list[InboxRecord] = [
        PresenceRecord(device_id=DEVICE, online=True, at_ms=AT_MS),
        JobStartRecord(device_id=DEVICE, job=spec("task-apply"), at_ms=AT_MS + 1),
        DeviceEventRecord(
            device_id=DEVICE,
            event_type="version_report",
            paras={"fw_version": "1.0"},
            at_ms=AT_MS + 2,
        ),
        PresenceRecord(device_id=DEVICE, online=True, at_ms=AT_MS + 3),
    ]
    return [
        InboxItem(offset, DEVICE.encode(), encode(record), AT_MS + offset)
        for offset, record in enumerate(records)
    ]


class RivalledStore(Store):
    """A store whose first snapshot is followed at once by another owner's write."""

    def __init__(self, client: redis.Redis[bytes], rival: Callable[[], object]) -> None:
        super().__init__(client)
        self._rival: Callable[[], object] | None = rival

    def snapshot(self, partition: int, device_ids: Sequence[str]) -> Snapshot:
        taken = super().snapshot(partition, device_ids)
        rival, self._rival = self._rival, None
        if rival is not None:
            rival()
        return taken


def _count(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(f"ota_worker_{name}_total", labels or {}) or 0.0


def test_a_write_refused_as_the_offset_moved_is_recomputed_from_the_new_offset(
    wredis: redis.Redis[bytes], wredis_url: str
) -> None:
    settings = make_settings("127.0.0.1:1", wredis_url, Topics())  # Kafka is not asked
    items = _items()
    store = Store(wredis)
    assert apply_partition(store, settings, "inbox", 0, items) is not None
    in_one_go = dump_partition(store, 0)
    wredis.flushdb()

    def rival() -> None:  # another owner applies the first two records meanwhile
        assert apply_partition(Store(wredis), settings, "inbox", 0, items[:2]) is not None

    conflicts, applied = _count("offset_conflicts"), _count("records", {"outcome": "applied"})
    result = apply_partition(RivalledStore(wredis, rival), settings, "inbox", 0, items)
    assert result is not None
    assert _count("offset_conflicts") == conflicts + 1
    assert _count("records", {"outcome": "applied"}) == applied + len(items)  # 2 + 2
    assert store.offset(0) == items[-1].offset
    assert dump_partition(store, 0) == in_one_go
    assert apply_partition(store, settings, "inbox", 0, items) is None  # all applied before
