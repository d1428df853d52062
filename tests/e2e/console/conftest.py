"""The console suite's stack: the four services as processes under `ota up`, on their
own topic prefix, Redis db 13, consumer groups and free ports (module scope: it stops
before other e2e modules start theirs), and a headless Chromium."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.demo_env import StackPlan

sys.path.insert(0, str(Path(__file__).parent))
from console_kit import Browser, browser_paths, chromium

from tests.conftest import missing
from tests.stack_kit import running_stack

REDIS_DB = 13


@pytest.fixture(scope="module")
def console_stack(
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackPlan]:
    with running_stack(
        "console",
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        redis_db=REDIS_DB,
        state_dir=tmp_path_factory.mktemp("console-stack"),
        partitions=2,
        extra={**mqtt_env, "OTA_CONSOLE_LIVE_INTERVAL_S": "0.3"},
    ) as stack:
        yield stack.plan


@pytest.fixture(scope="module")
def browser(console_stack: StackPlan) -> Iterator[Browser]:
    paths = browser_paths()
    if paths is None:
        missing("chromium and chromium-driver are not installed (deploy/local/up installs them)")
    driver = chromium(*paths)
    try:
        yield Browser(driver, console_stack.api_url)
    finally:
        driver.quit()
