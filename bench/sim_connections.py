"""How many concurrent device connections the fleet simulator and the device broker hold.

Registers N simulated devices in the credential store (OTA_CREDENTIALS_REDIS_URL, with
the development key), opens one MQTT connection each (IoTDA credentials, no SUBSCRIBE:
the broker subscribes them), holds them, checks they are all still up, and prints
`sim.connections = N connections` with the time connecting took.

Usage: python bench/sim_connections.py [--size N] [--hold-s S] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

from devices.behaviour import Behaviour
from devices.fleet import DEFAULT_SEED, Fleet, FleetConfig, Mode, derived_secret
from ota.settings import CommonSettings
from scheduler.credential_import import import_pairs
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys

QUIET = Behaviour(report_at_boot=False, keepalive_s=300)
CREDENTIALS_URL = os.environ.get("OTA_CREDENTIALS_REDIS_URL", "redis://127.0.0.1:6379/1")


async def register(device_ids: list[str]) -> int:
    keys = CredentialKeys.parse(os.environ.get("OTA_CREDENTIAL_KEYS") or DEV_CREDENTIAL_KEYS)
    pairs = ((d, derived_secret(DEFAULT_SEED, d)) for d in device_ids)
    return await import_pairs(CREDENTIALS_URL, keys, pairs)


async def one_run(size: int, hold_s: float) -> tuple[int, float]:
    config = FleetConfig.from_settings(
        CommonSettings.from_env(),
        size,
        mode=Mode.CONNECTIONS,
        prefix=f"bench-conn-{uuid.uuid4().hex[:6]}",
        behaviour_of=lambda _i, _d: QUIET,
        connects_in_parallel=500,
        register=register,
    )
    started = time.monotonic()
    fleet = Fleet(config)
    try:
        await fleet.start()
        connect_s = time.monotonic() - started
        await asyncio.sleep(hold_s)
        held = fleet.online
    finally:
        await fleet.stop()
    return held, connect_s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--hold-s", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    held, times = [], []
    for n in range(args.runs):
        count, connect_s = asyncio.run(one_run(args.size, args.hold_s))
        held.append(count)
        times.append(connect_s)
        print(f"run {n + 1}: {count} connections held, connected in {connect_s:.1f} s", flush=True)
    print(
        f"sim.connections = {min(held)} connections (min of {args.runs}; "
        f"median connect time {statistics.median(times):.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
