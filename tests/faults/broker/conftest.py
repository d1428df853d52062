"""Fixtures of the broker's fault tests: the worker kit's modules are importable by name
(its folder is no package: it would shadow `workers`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "integration" / "workers"))
