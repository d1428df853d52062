"""The overview's version census against the real Redis: it counts devices per version
from the registry's index of known versions, and fills that index by one scan for a
registry written before it existed."""

from __future__ import annotations

import uuid

import redis
import redis.asyncio

from ota.records import DeviceEventRecord
from scheduler import keys
from scheduler.console.pages_overview import census
from scheduler.devices import Registry
from tests.integration.scheduler.conftest import ON_BOTH

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


async def test_the_version_census_counts_devices_from_the_index_of_known_versions(
    registry: Registry, aredis: redis.asyncio.Redis[bytes]
) -> None:
    tag = uuid.uuid4().hex[:8]
    old, new = f"1.0-{tag}", f"2.0-{tag}"
    devices = [f"census-{tag}-{i}" for i in range(3)]
    await registry.observe(
        [
            DeviceEventRecord(
                device_id=d,
                event_type="version_report",
                paras={"fw_version": old, "sw_version": None},
                at_ms=1000,
            )
            for d in devices
        ]
        + [
            DeviceEventRecord(
                device_id=devices[0],
                event_type="version_report",
                paras={"fw_version": new, "sw_version": None},
                at_ms=2000,
            )
        ]
    )
    assert {old.encode(), new.encode()} <= await aredis.smembers(keys.known_versions("fw"))
    counts = dict(await census(aredis, "fw"))
    assert (counts[old], counts[new]) == (2, 1)

    # A registry from before the index: the census finds the versions by one scan and
    # keeps them in the index from then on.
    await aredis.delete(keys.known_versions("fw"))
    assert dict(await census(aredis, "fw"))[old] == 2
    assert old.encode() in await aredis.smembers(keys.known_versions("fw"))
