"""Fixtures of the worker's fault tests: the integration kit, each test on Redis db 14
and on a private three-master Redis Cluster."""

from __future__ import annotations

import sys
from pathlib import Path

# The kit lives with the integration tests; these folders are no packages (they would
# shadow `workers`).
sys.path.insert(0, str(Path(__file__).parents[2] / "integration" / "workers"))
from workerkit import inbox, wredis, wredis_url, wsettings

from tests.redis_cluster_kit import redis_cluster

__all__ = ["inbox", "redis_cluster", "wredis", "wredis_url", "wsettings"]
