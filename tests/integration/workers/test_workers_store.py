"""The store's pipelined scripts on the real Redis: calls Redis does not know the script
of (restarted, scripts flushed) are loaded and run again, alone; other errors still raise."""

from __future__ import annotations

import uuid

import pytest
import redis

from workers import store as store_module
from workers.batch import DeviceWrite
from workers.store import NO_OFFSET, Store, Write


@pytest.fixture
def unknown_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripts no Redis has seen yet (a unique comment changes the digest), so the first
    call of each is refused with NOSCRIPT, as after a Redis restart."""
    tag = f"\n-- {uuid.uuid4().hex}\n"
    monkeypatch.setattr(
        store_module, "_SCRIPTS", tuple(script + tag for script in store_module._SCRIPTS)
    )


def _write(partition: int, expected: int, new: int, device_id: str) -> Write:
    return Write(partition, expected, new, [DeviceWrite(device_id, b"[true]", 0, 1_000)], b"outbox")


@pytest.mark.usefixtures("unknown_scripts")
def test_unknown_scripts_are_loaded_and_only_the_refused_calls_run_again(
    wredis: redis.Redis[bytes],
) -> None:
    store = Store(wredis)
    found = store.apply_many([_write(0, NO_OFFSET, 5, "d-a"), _write(1, NO_OFFSET, 9, "d-b")])
    assert found == [None, None]  # each ran exactly once: a second run would find its offset
    assert (store.offset(0), store.offset(1)) == (5, 9)
    assert wredis.exists(store.keys(0).device("d-a")) == 1
    # Now known: the same writes are refused by the offset guard, with the stored offset.
    assert store.apply_many([_write(0, NO_OFFSET, 6, "d-a")]) == [5]
    leased = store.pop_due_many([0, 1], 2_000, 2_000, 10, 30_000)
    assert leased == [(["d-a"], None), (["d-b"], None)]
    store.ack_fired_many([(0, 32_000, ["d-a"]), (1, 32_000, ["d-b"])])
    assert wredis.zcard(store.keys(0).fired) == wredis.zcard(store.keys(1).fired) == 0


def test_a_script_error_raises_after_the_other_calls_ran(wredis: redis.Redis[bytes]) -> None:
    store = Store(wredis)
    wredis.hset(store.keys(1).offset, "not", "a string")  # GET in APPLY fails: WRONGTYPE
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.apply_many([_write(0, NO_OFFSET, 3, "d-a"), _write(1, NO_OFFSET, 4, "d-b")])
    assert store.offset(0) == 3
