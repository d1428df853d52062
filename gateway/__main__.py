"""`python -m gateway`: the MQTT <-> Kafka gateway (settings from OTA_ variables)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import uvloop

from gateway.service import run
from gateway.settings import GatewaySettings
from ota.logs import setup
from ota.metrics import serve_metrics
from ota.settings import SettingsError

log = logging.getLogger("gateway")


async def _main(settings: GatewaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():  # the second signal: exit now, the broker redelivers
            log.warning("second signal; exiting at once")
            os._exit(130)
        log.info("signal received; draining", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await run(settings, stop)


def main() -> int:
    try:
        settings = GatewaySettings.from_env()
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    setup("gateway", settings.common.log_level)
    serve_metrics(settings.metrics_port, settings.common.metrics_host)
    uvloop.run(_main(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
