"""The gateway, stopping at one point of the uplink path, for the crash tests to kill there:
`python tests/faults/gateway/pausing_gateway.py before_kafka_ack|before_puback` (the
repository on PYTHONPATH, settings from OTA_ variables as for `python -m gateway`).

The production gateway runs unchanged on the shared runtime; only its uplink handler is a
subclass that holds device uplinks at the chosen point and logs `test pause`:
`before_kafka_ack` never hands them to Kafka, `before_puback` lets Kafka take them and
never sends the broker the PUBACK. Broker notices (presence) pass untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from gateway.inbound import Inbound
from gateway.service import SERVICE, run
from gateway.settings import GatewaySettings
from ota.mqtt import Ack
from ota.runtime import Runtime
from ota.runtime import run as run_service

log = logging.getLogger("pausing_gateway")
POINTS = ("before_kafka_ack", "before_puback")


def pausing(point: str) -> type[Inbound]:
    class PausingInbound(Inbound):
        def receive(self, topic: str, payload: bytes, qos: int, ack: Ack) -> None:
            if not topic.startswith("$oc/"):
                super().receive(topic, payload, qos, ack)
            elif point == "before_kafka_ack":
                log.warning("test pause", extra={"point": point})  # held: never produced
            else:

                def withheld(_reason: int) -> None:
                    log.warning("test pause", extra={"point": point})  # Kafka has it

                super().receive(topic, payload, qos, withheld)

    return PausingInbound


def main() -> int:
    point = sys.argv[1] if len(sys.argv) > 1 else ""
    if point not in POINTS:
        print(f"usage: pausing_gateway.py {'|'.join(POINTS)}", file=sys.stderr)
        return 2
    inbound_type = pausing(point)

    async def paused_main(settings: GatewaySettings, rt: Runtime) -> None:
        await run(settings, rt, inbound_type=inbound_type)

    return run_service(dataclasses.replace(SERVICE, main=paused_main))


if __name__ == "__main__":
    sys.exit(main())
