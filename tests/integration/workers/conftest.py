"""Fixtures of the worker's integration tests: each runs twice, on the shared Redis (db
14, the worker tests' own) and on a private three-master Redis Cluster."""

from __future__ import annotations

import sys
from pathlib import Path

# The kit sits next to this file; this folder is no package (it would shadow `workers`).
sys.path.insert(0, str(Path(__file__).parent))
from workerkit import inbox, wredis, wredis_url, wsettings

__all__ = ["inbox", "wredis", "wredis_url", "wsettings"]
