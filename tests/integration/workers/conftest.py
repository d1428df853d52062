"""Fixtures of the worker's integration tests: each runs twice, on the shared Redis (db
14, the worker tests' own) and on a private three-master Redis Cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The kit sits next to this file; this folder is no package (it would shadow `workers`).
sys.path.insert(0, str(Path(__file__).parent))
from workerkit import inbox, worker_redis_url, wredis, wsettings

from tests.redis_cluster_kit import PrivateRedisCluster

__all__ = ["inbox", "wredis", "wsettings"]


@pytest.fixture(params=["standalone", "cluster"])
def wredis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    if request.param == "standalone":
        return worker_redis_url(redis_url)
    cluster: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
    return cluster.url
