"""Every Lua script of the workers and the download edge names keys of one Redis Cluster
slot, for representative inputs (redis-py's own slot function, no server)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from download_edge.progress import (
    OUTBOX_SHARDS,
    hash_key,
    outbox_key,
    parse_hash_key,
    shard_of,
)
from workers.store import PartitionKeys

device_ids = st.text(
    st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=64
)  # {, } and : included: a device id must never break its key's hash tag
digests = st.text("0123456789abcdef", min_size=64, max_size=64)


def slots(*keys: str) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


@given(st.integers(0, 9_999), st.lists(device_ids, max_size=8), st.lists(digests, max_size=3))
def test_a_workers_apply_touches_one_slot(
    partition: int, devices: list[str], specs: list[str]
) -> None:
    keys = PartitionKeys(partition)
    # APPLY: offset, deadlines, outbox, device keys, spec keys; POP_DUE: deadlines, fired;
    # ACK_FIRED: fired; a snapshot's MGET: device keys.
    named = [keys.offset, keys.deadlines, keys.outbox, keys.fired]
    named += [keys.device(d) for d in devices] + [keys.spec(s) for s in specs]
    assert len(slots(*named)) == 1


def test_partitions_spread_over_slots() -> None:
    assert len(slots(*(PartitionKeys(p).offset for p in range(64)))) == 64


@given(device_ids, digests)
def test_an_edge_merge_touches_one_slot(device_id: str, sha: str) -> None:
    # MERGE_SCRIPT and ACK_SCRIPT: the (package, device) hash and its shard's outbox.
    assert len(slots(hash_key(device_id, sha), outbox_key(shard_of(device_id)))) == 1
    assert parse_hash_key(hash_key(device_id, sha)) == (device_id, sha)


def test_edge_shards_spread_over_slots() -> None:
    assert len(slots(*(outbox_key(s) for s in range(OUTBOX_SHARDS)))) == OUTBOX_SHARDS


def test_keys_of_another_shape_are_not_progress_hashes() -> None:
    sha = "ab" * 32
    assert parse_hash_key(f"ota:edge:dl:{sha}:dev-1") is None  # the untagged layout
    assert (
        parse_hash_key(f"ota:edge:{{dl{(shard_of('dev-1') + 1) % OUTBOX_SHARDS}}}:{sha}:dev-1")
        is None
    )
    assert parse_hash_key(outbox_key(3)) is None
