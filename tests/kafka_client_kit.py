"""The Kafka client a test run's in-process services use: OTA_KAFKA_CLIENT from the
environment when it is set (the suite on the other client), else the settings' default.

Harnesses build service settings from a dict of their own, which does not see the
environment; they add `kafka_client_env()` to it. Services started as processes inherit
the environment anyway."""

from __future__ import annotations

import os


def kafka_client_env() -> dict[str, str]:
    chosen = os.environ.get("OTA_KAFKA_CLIENT", "").strip()
    return {"OTA_KAFKA_CLIENT": chosen} if chosen else {}
