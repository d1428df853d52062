"""The shared device-authentication vectors (tests/vectors/device_auth.json) still hold for
the Python code: the broker's Java port is tested against the same file (deploy/broker's
DeviceAuthVectorsTest), so the two decide every case alike."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def _maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_device_auth_vectors", VECTORS / "make_device_auth_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


MAKER = _maker()
CASES: list[dict[str, Any]] = orjson.loads((VECTORS / "device_auth.json").read_bytes())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_the_python_code_gives_the_committed_answer(case: dict[str, Any]) -> None:
    got = await MAKER.answer(
        MAKER.Case(
            case["name"],
            case["client_id"],
            case["username"],
            case["password"],
            case["record"],
            case["now_ms"],
        )
    )
    assert got == case["expected"]


def test_the_committed_file_is_what_the_maker_writes_now() -> None:
    """New or changed cases in the maker must be committed to the JSON as well."""
    assert (VECTORS / "device_auth.json").read_bytes() == MAKER.render()


def test_every_reason_is_covered() -> None:
    assert {c["expected"] for c in CASES} == {
        "ok",
        "malformed_client_id",
        "unknown_device",
        "bad_password",
        "disabled",
        "clock_skew",
        "username_mismatch",
        "auth_unavailable",
    }
