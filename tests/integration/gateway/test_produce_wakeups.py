"""The bridge holds kafka-python's sender wake-ups for `wakeup_delay_s` (below the linger):
records produced over several loop passes to as many partitions wake the sender once, and
every one is acknowledged."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from ota.kafka_async import AsyncProducer
from ota.kafka_clients import make_producer
from ota.settings import CommonSettings

PARTITIONS = 6


async def test_records_of_several_loop_passes_wake_the_sender_once(
    kafka_bootstrap: str, topic_factory: Callable[..., str], wakeups: list[str]
) -> None:
    topic = topic_factory("wakeups", partitions=PARTITIONS)
    settings = CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": "kafka-python"}
    )
    kafka = await asyncio.to_thread(
        make_producer, settings, client_id="gw-wakeup-test", linger_ms=200
    )
    await asyncio.to_thread(kafka.partitions_for, topic)
    wakeups.clear()
    loop = asyncio.get_running_loop()
    bridge = AsyncProducer(kafka, loop, wakeup_delay_s=0.1)
    answers: list[BaseException | None] = []
    done = asyncio.Event()

    def on_done(error: BaseException | None) -> None:
        answers.append(error)
        if len(answers) == PARTITIONS:
            done.set()

    try:
        for n in range(PARTITIONS):  # distinct keys over the partitions, one per loop pass
            bridge.produce(topic, f"device-{n}".encode(), b"v", on_done)
            await asyncio.sleep(0)
        assert wakeups == []  # unheld, each send that started a batch would have woken it
        await asyncio.wait_for(done.wait(), 20)
        assert answers == [None] * PARTITIONS
        assert wakeups == [threading.current_thread().name]  # the one release, on the loop
    finally:
        await bridge.close(5)
