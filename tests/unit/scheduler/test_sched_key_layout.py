"""The scheduler's keys share one Redis Cluster slot, and the start's move of the
untagged layout maps each old key to its tagged name (no server)."""

from __future__ import annotations

import inspect

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from scheduler import keys
from scheduler.credential_log import MARK
from scheduler.credentials import PENDING, SEQ, deleted_key, record_key
from scheduler.device_cas import DEVICE_CAS
from scheduler.key_layout import new_name

names = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40)


def every_key(name: str) -> list[str]:
    """Each constant of scheduler/keys.py, and each key function called with `name`."""
    out = [v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str)]
    for fn in vars(keys).values():
        if inspect.isfunction(fn) and fn.__module__ == keys.__name__:
            out.append(fn(*[name] * len(inspect.signature(fn).parameters)))
    return out


@given(names)
def test_every_scheduler_key_is_on_the_slot_of_its_tag(name: str) -> None:
    # `{` and `}` in a device id, task id or tag: the first tag of the key is still {sched}.
    found = every_key(name)
    assert len(found) > 40
    assert {key_slot(k.encode()) for k in found} == {key_slot(b"{sched}")}


def test_the_old_layout_moves_to_the_tagged_one_except_the_credential_store() -> None:
    assert new_name(b"ota:sched:dev:d-1:tl") == keys.timeline("d-1").encode()
    assert new_name(b"ota:sched:task:t1:counts") == keys.task_counts("t1").encode()
    assert new_name(b"ota:sched:restored") == keys.RESTORED.encode()
    assert new_name(b"ota:sched:audit") == keys.AUDIT_STREAM.encode()
    assert new_name(b"ota:sched:login-debt:ab12") == (keys.LOGIN_DEBT + "ab12").encode()
    for stays in (record_key("d-1"), SEQ, PENDING, deleted_key("d-1"), MARK, DEVICE_CAS):
        assert new_name(stays.encode()) is None, stays
    assert new_name(b"ota:{p3}:d:d-1") is None  # a worker's key
    assert new_name(keys.device("d-1").encode()) is None  # already tagged


def test_the_families_with_their_own_hash_tag_lose_it() -> None:
    assert new_name(b"ota:sched:{audit-budget}:debt") == keys.AUDIT_DEBT.encode()
    assert new_name(b"ota:sched:{audit-budget}:untold") == keys.AUDIT_UNTOLD.encode()
    assert new_name(b"ota:sched:dry:{r-1}:summary") == keys.dry_run("r-1", "summary").encode()
    assert new_name(b"ota:sched:dry:{r-1}:conflict") == keys.dry_run("r-1", "conflict").encode()
