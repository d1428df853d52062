"""The e2e session's stack: the four services as real processes under `ota up`, on this
suite's own topic prefix, Redis db 10, consumer groups and free ports, so other suites
running at the same time on the same Kafka, Redis and broker are not disturbed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from e2e_support import E2E, e2e_stack

REDIS_DB = 10


@pytest.fixture(scope="session")
def e2e(
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2E]:
    with e2e_stack(
        "e2e",
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        redis_db=REDIS_DB,
        state_dir=tmp_path_factory.mktemp("e2e"),
        extra=mqtt_env,
    ) as stack:
        yield stack
