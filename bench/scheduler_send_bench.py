"""CPU the scheduler's producer spends handing records to Kafka, the reconciler's way:
patient sends of `--slice` records at a time, each awaited before the next, to a fresh
12-partition topic on the local stack.

- scheduler.patient_send_cpu_us_per_record: the process's CPU time (the event loop and
  the client's threads) per record acknowledged, the median of --runs.

    .venv/bin/python bench/scheduler_send_bench.py [--records 50000] [--slice 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from kafka.admin import KafkaAdminClient, NewTopic
from scheduler_process import machine_line

from ota.settings import CommonSettings
from scheduler.bus import Out, Producer

VALUE = b"x" * 300  # about a start record's size


async def one_run(settings: CommonSettings, topic: str, records: int, size: int) -> float:
    producer = Producer(settings)
    try:
        await producer.send([Out(topic, "warm-up", VALUE)], patient=True)
        started = time.process_time()
        for first in range(0, records, size):
            batch = [Out(topic, f"device-{n:08d}", VALUE) for n in range(first, first + size)]
            await producer.send(batch, patient=True)
        return time.process_time() - started
    finally:
        await producer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--slice", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = CommonSettings.from_env()
    topic = f"bench-send-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 12, 1)])
    load = os.getloadavg()
    try:
        cpu = [
            asyncio.run(one_run(settings, topic, args.records, args.slice))
            for _ in range(args.runs)
        ]
    finally:
        admin.delete_topics([topic])
        admin.close()
    per_record = statistics.median(cpu) / args.records * 1e6
    print(f"# {machine_line(load)}; runs (CPU s): {', '.join(f'{c:.2f}' for c in cpu)}")
    print(f"scheduler.patient_send_cpu_us_per_record = {per_record:.1f} us")


if __name__ == "__main__":
    main()
