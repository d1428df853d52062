from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.slots import Split, SplitMode, slot_of

device_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40)


@given(device_ids, st.integers(min_value=1, max_value=64))
def test_exactly_one_replica_owns_each_device(device_id: str, replicas: int) -> None:
    owners = [i for i in range(replicas) if Split(SplitMode.SLOT, replicas, i).owns(device_id)]
    assert owners == [slot_of(device_id, replicas)]


def test_slot_is_stable_across_processes() -> None:
    # CRC-32 of the id bytes: fixed values, so replicas in any process agree.
    assert slot_of("devA", 4) == 0xA3A219F5 % 4 == 1
    assert slot_of("device-000001", 3) == 0xE6A68569 % 3 == 1


def test_slots_spread_devices_evenly() -> None:
    counts = [0, 0, 0, 0]
    for n in range(10_000):
        counts[slot_of(f"device-{n:06d}", 4)] += 1
    assert min(counts) > 2_200


def test_shared_mode_owns_everything_and_prefixes_the_filter() -> None:
    split = Split(SplitMode.SHARED, replicas=3, index=1, share_group="g")
    assert split.owns("anything")
    assert split.uplink_filter("oc/x/+") == "$share/g/oc/x/+"
    assert Split(SplitMode.SLOT, 3, 1).uplink_filter("$oc/x/+") == "$oc/x/+"


@pytest.mark.parametrize(("replicas", "index"), [(0, 0), (2, 2), (2, -1)])
def test_bad_replica_numbers_are_refused(replicas: int, index: int) -> None:
    with pytest.raises(ValueError, match="replica index"):
        Split(SplitMode.SLOT, replicas, index)


@given(device_ids, st.integers(min_value=1, max_value=64))
def test_one_replica_forwards_a_live_notice_every_replica_a_held_one(
    device_id: str, replicas: int
) -> None:
    splits = [Split(SplitMode.SLOT, replicas, i) for i in range(replicas)]
    live = [s.index for s in splits if s.forwards_presence(device_id, held=False)]
    assert live == [slot_of(device_id, replicas)]
    assert all(s.forwards_presence(device_id, held=True) for s in splits)
