"""The deploy/ scripts for unit tests: they run as files, not as a package, so a test loads
one by its path (`load("sbom")` is deploy/sbom.py, registered as module `deploy_sbom`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load(script: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{script}", ROOT / f"deploy/{script}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
