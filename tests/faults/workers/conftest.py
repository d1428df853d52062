"""Fixtures of the worker's fault tests: the integration kit, on Redis db 14."""

from __future__ import annotations

import sys
from pathlib import Path

# The kit lives with the integration tests; these folders are no packages (they would
# shadow `workers`).
sys.path.insert(0, str(Path(__file__).parents[2] / "integration" / "workers"))
from workerkit import inbox, wredis, wredis_url, wsettings

__all__ = ["inbox", "wredis", "wredis_url", "wsettings"]
