"""Fixtures of the worker's integration tests (Redis db 14 is the worker tests' own)."""

from __future__ import annotations

import sys
from pathlib import Path

# The kit sits next to this file; this folder is no package (it would shadow `workers`).
sys.path.insert(0, str(Path(__file__).parent))
from workerkit import inbox, wredis, wsettings

__all__ = ["inbox", "wredis", "wsettings"]
