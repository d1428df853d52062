"""`python -m gateway`: the MQTT <-> Kafka gateway (settings from OTA_ variables)."""

from __future__ import annotations

import sys

from gateway.service import SERVICE
from ota.runtime import run

if __name__ == "__main__":
    sys.exit(run(SERVICE))
