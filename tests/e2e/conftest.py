"""The e2e session's stack: the four services as real processes under `ota up`, on this
suite's own topic prefix, Redis db 10, consumer groups and free ports, so other suites
running at the same time on the same Kafka, Redis and broker are not disturbed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.stack_kit import running_stack

sys.path.insert(0, str(Path(__file__).parent))
from e2e_support import E2E, WEBHOOK_SECRET, WebhookReceiver, public_pem

REDIS_DB = 10


@pytest.fixture(scope="session")
def e2e(
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2E]:
    # The scheduler checks package signatures with this key (not required: unsigned
    # uploads go on working); signed rollouts sign with its private half.
    signing_key = ed25519.Ed25519PrivateKey.generate()
    key_file = tmp_path_factory.mktemp("e2e-signing") / "package-keys.pem"
    key_file.write_bytes(public_pem(signing_key))
    extra = {
        **mqtt_env,
        "OTA_PACKAGE_PUBLIC_KEY": str(key_file),
        "OTA_WEBHOOK_BACKOFF_S": "0.05",
        "OTA_WEBHOOK_TIMEOUT_S": "2",
    }
    if "OTA_KAFKA_CLIENT" in os.environ:  # the suite on the other client: set it to choose
        extra["OTA_KAFKA_CLIENT"] = os.environ["OTA_KAFKA_CLIENT"]
    webhooks = WebhookReceiver()
    try:
        with running_stack(
            "e2e",
            kafka_bootstrap=kafka_bootstrap,
            redis_url=redis_url,
            redis_db=REDIS_DB,
            state_dir=tmp_path_factory.mktemp("e2e-stack"),
            extra=extra,
        ) as stack:
            plan = stack.plan
            hook = httpx.post(
                f"{plan.api_url}/v1/webhooks",
                headers={"Authorization": f"Bearer {plan.write_key}"},
                json={"url": webhooks.url, "secret": WEBHOOK_SECRET},
            )
            assert hook.status_code == 201, hook.text
            yield E2E(plan, stack.env, webhooks, signing_key)
    finally:
        webhooks.close()
