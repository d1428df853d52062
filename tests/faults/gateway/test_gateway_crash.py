"""A gateway killed with SIGKILL at either side of the Kafka acknowledgement loses nothing.

The gateway process (pausing_gateway.py: the real gateway whose uplink handler holds the
uplink at one point and logs "test pause") is killed there; the test starts a normal
gateway with the same client id (persistent session), and checks the message arrives,
with the same record id when it arrives twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from ota.protocol import up_topic
from ota.records import DeviceEventRecord
from tests.integration.gateway.conftest import (
    REPO,
    Device,
    KafkaReader,
    Stack,
    kill_hard,
    new_device,
    running_gateway,
    wait_log,
)

PAUSING_GATEWAY = Path(__file__).with_name("pausing_gateway.py")


def pausing_gateway(stack: Stack, point: str) -> subprocess.Popen[bytes]:
    # No presence: the broker announces the device before its report arrives, and the pause
    # must hold the report, not that announcement.
    env = {
        **os.environ,
        **stack.env,
        "OTA_GATEWAY_PRESENCE_SOURCE": "none",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, str(PAUSING_GATEWAY), point],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _events(records: list[Any], device_id: str) -> list[DeviceEventRecord]:
    return [r for r in records if isinstance(r, DeviceEventRecord) and r.device_id == device_id]


@pytest.mark.parametrize(
    ("point", "copies_before_restart"),
    [("before_kafka_ack", 0), ("before_puback", 1)],
)
async def test_kill_at_a_pause_point_loses_nothing(
    stack: Stack,
    readers: Callable[[str], KafkaReader],
    point: str,
    copies_before_restart: int,
    devices: Callable[[str], Device],
) -> None:
    inbox = readers(stack.topics.inbox)
    device_id = new_device("crash")
    payload = orjson.dumps(
        {
            "services": [
                {
                    "service_id": "$ota",
                    "event_type": "upgrade_progress_report",
                    "event_id": "cmd-7",
                    "paras": {"result_code": 0, "progress": 100, "version": "2.0"},
                }
            ]
        }
    )
    process = pausing_gateway(stack, point)
    try:
        wait_log(process, "gateway started")
        device = devices(device_id)
        await device.connect()
        device.publish(up_topic(device_id), payload)
        wait_log(process, "test pause")
        if copies_before_restart:
            await inbox.wait_for(lambda rs: len(_events(rs, device_id)) == 1)
    finally:
        kill_hard(process)
    assert len(_events(inbox.snapshot(), device_id)) == copies_before_restart
    async with running_gateway(stack):
        records = await inbox.wait_for(
            lambda rs: len(_events(rs, device_id)) == copies_before_restart + 1
        )
    await device.close()
    copies = _events(records, device_id)
    assert {c.device_event_id for c in copies} == {"cmd-7"}
    assert len({c.id for c in copies}) == 1
    assert copies[-1].paras == {"result_code": 0, "progress": 100, "version": "2.0"}
