"""Fixtures for the edge tests: a package in the cache, edges started per test, tokens."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from download_edge.progress import Sink
from download_edge.settings import EdgeSettings
from ota.settings import CommonSettings
from ota.tokens import mint

from .edge_support import EdgeFactory, Package, RunningEdge, write_package

PACKAGE_BYTES = 3 * 1024 * 1024 + 123


@pytest.fixture
def common() -> CommonSettings:
    return CommonSettings.from_env({})


@pytest.fixture
def base_settings(tmp_path: Path, common: CommonSettings) -> EdgeSettings:
    return EdgeSettings(
        common=common,
        host="127.0.0.1",
        port=0,
        cache_dir=tmp_path / "cache",
        events=False,
        metrics_port=0,
        drain_s=2.0,
        header_timeout_s=1.0,
        idle_timeout_s=1.5,
    )


@pytest.fixture
def package(base_settings: EdgeSettings) -> Package:
    return write_package(base_settings.cache_dir, os.urandom(PACKAGE_BYTES))


@pytest.fixture
def edge_factory(base_settings: EdgeSettings) -> Iterator[EdgeFactory]:
    started: list[RunningEdge] = []

    def start(store: Any = None, sink: Sink | None = None, **changes: Any) -> RunningEdge:
        running = RunningEdge(replace(base_settings, **changes), store, sink)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def edge(edge_factory: EdgeFactory, package: Package) -> RunningEdge:
    return edge_factory()


@pytest.fixture
def token_for(common: CommonSettings) -> Callable[..., str]:
    def make(package_sha256: str, device_id: str = "dev-1", expires_in_s: int = 3600) -> str:
        return mint(
            common.token_keys,
            device_id=device_id,
            package_sha256=package_sha256,
            expires_s=int(time.time()) + expires_in_s,
        )

    return make
