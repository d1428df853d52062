"""The Redis keys of the budgets every scheduler replica shares (scheduler/shared_budget.py,
scheduler/console/login_throttle.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from scheduler.console.login_throttle import KEY_PREFIX, address_key
from scheduler.shared_budget import DEBT_KEY, UNTOLD_KEY


@given(st.text(max_size=2000))
def test_every_address_has_a_key_of_one_length(address: str) -> None:
    key = address_key(address)
    assert key.startswith(KEY_PREFIX)
    assert len(key) == len(KEY_PREFIX) + 32
    assert address_key(address + "x") != key


def test_the_audit_budget_script_names_keys_of_one_cluster_slot() -> None:
    assert key_slot(DEBT_KEY.encode()) == key_slot(UNTOLD_KEY.encode())
