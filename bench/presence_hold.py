"""How fast the device broker releases presence events it held while no platform client
was subscribed (docs/broker.md, "Presence held"), as after a broker restart.

Starts a private broker (the launcher jar from --lib, on free ports, http mode against the
broker tests' in-process authentication server), connects --devices MQTT 3.1.1 devices
(--concurrency CONNECTs in flight) with no platform client, waits until the broker holds
all their online events (`ota_broker_presence_held`), then connects a platform client,
subscribes to `$ota/presence/+` and times its SUBACK and the arrival of every held event.
The receiving client is one gmqtt client in this process (Python): the figure is a lower
bound on the broker's release rate.

Usage: .venv/bin/python bench/presence_hold.py [--devices 10000] [--concurrency 100]
       [--lib .state/broker/lib]
Needs: java, the broker build (deploy/local/up), `ulimit -n` above --devices + 100.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]
# A third-party wheel installs a `tests` package into site-packages; the repository's
# tests (the broker's test kit lives there) must win.
_tests = types.ModuleType("tests")
_tests.__path__ = [str(REPO / "tests")]
sys.modules["tests"] = _tests

from tests.integration.broker.authserver import AuthServer, iotda_hour, iotda_password  # noqa: E402
from tests.integration.broker.broker_support import BrokerProcess, start_broker  # noqa: E402
from tests.integration.broker.conftest import connect_gmqtt, subscribe  # noqa: E402
from tests.integration.broker.rawmqtt import ACCEPTED, RawClient  # noqa: E402

AUTH_KEY = "bench-hold-key"


async def connect_devices(
    broker: BrokerProcess, auth: AuthServer, count: int, concurrency: int
) -> list[RawClient]:
    hour = iotda_hour()
    devices = [(f"dev-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex) for _ in range(count)]
    for device_id, secret in devices:
        auth.add_device(device_id, secret)
    gate = asyncio.Semaphore(concurrency)
    clients: list[RawClient] = []

    async def one(device_id: str, secret: str) -> None:
        async with gate:
            client = await RawClient.open("127.0.0.1", broker.plain_port)
            clients.append(client)
            code = await client.connect(
                f"{device_id}_0_0_{hour}", device_id, iotda_password(secret, hour)
            )
            if code != ACCEPTED:
                raise RuntimeError(f"{device_id} refused with {code}")

    await asyncio.gather(*(one(d, s) for d, s in devices))
    return clients


async def held_reaches(broker: BrokerProcess, count: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while broker.metric("ota_broker_presence_held") < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the metric is only read, never pushed


async def measure(broker: BrokerProcess, auth: AuthServer, count: int, concurrency: int) -> None:
    started = time.monotonic()
    clients = await connect_devices(broker, auth, count, concurrency)
    try:
        await held_reaches(broker, count, 60)
        print(
            f"{count} devices connected, their online events held: {time.monotonic() - started:.1f} s"
        )
        client, inbox = await connect_gmqtt(
            f"ota-bench-{uuid.uuid4().hex[:6]}",
            broker.platform_user,
            broker.platform_password,
            broker.platform_port,
        )
        all_in = asyncio.Event()
        record = inbox.on_message

        def on_message(*args: Any) -> int:
            code = record(*args)
            if len(inbox.messages) >= count:
                all_in.set()
            return code

        client.on_message = on_message
        asked = time.monotonic()
        assert await subscribe(client, "$ota/presence/+") == [1]
        subacked = time.monotonic() - asked
        await asyncio.wait_for(all_in.wait(), 300)
        took = time.monotonic() - asked
        print(
            f"SUBACK after {subacked * 1000:.0f} ms; {count} held events received "
            f"{took:.2f} s after SUBSCRIBE ({count / took:,.0f}/s); "
            f"held now {broker.metric('ota_broker_presence_held'):.0f}"
        )
        await client.disconnect()
    finally:
        for device in clients:
            device.abort()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="release of held presence events")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--lib", type=Path, default=REPO / ".state" / "broker" / "lib")
    args = parser.parse_args(argv)
    auth = AuthServer(AUTH_KEY)
    broker = start_broker(
        args.lib, Path(tempfile.mkdtemp(prefix="ota-bench-hold-")), auth.url, AUTH_KEY
    )
    try:
        asyncio.run(measure(broker, auth, args.devices, args.concurrency))
    finally:
        broker.stop()
        auth.close()


if __name__ == "__main__":
    main()
