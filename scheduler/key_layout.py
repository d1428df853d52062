"""Moves the scheduler's keys from the untagged layout (`ota:sched:<rest>`) to the
hash-tagged one (`ota:{sched}:<rest>`, scheduler/keys.py), once, at the first start of a
scheduler that knows the tagged one.

Every key under the old prefix moves to the same rest under the new one (the audit
budget's and the dry runs' own hash tags dropped), its value and time to live kept
(RENAMENX), except the device credential store's keys, which keep their
names because the device broker reads them there (scheduler/credentials.py). A key whose
new name is already taken stays where it is and is counted in the log: only a scheduler
of the old layout still running beside the new one writes those, and the new one no
longer reads them. `keys.LAYOUT` is set when done, so later starts do nothing; a start
that dies half-way moves the rest at the next one, and replicas starting together share
the work (a key another replica moved is gone, which RENAMENX answers with an error that
is skipped).
"""

from __future__ import annotations

import logging

import redis.asyncio
from redis.exceptions import ResponseError

from scheduler import keys
from scheduler.credentials import STORE_P

log = logging.getLogger(__name__)

OLD_P = "ota:sched:"
VERSION = b"2"
BATCH = 1000
# The credential store's names under the old prefix (scheduler/credentials.py,
# device_cas.py, credential_log.py): they stay.
_STORE_NAMES = (f"{STORE_P}cred:", f"{STORE_P}cred-", f"{STORE_P}device-cas")


def new_name(old: bytes) -> bytes | None:
    """The tagged name of an untagged scheduler key, or None for a key that stays."""
    name = old.decode(errors="replace")
    if not name.startswith(OLD_P) or name.startswith(_STORE_NAMES):
        return None
    rest = name.removeprefix(OLD_P)
    # The two families that had a hash tag of their own lose it: the new prefix is theirs.
    if rest.startswith("{audit-budget}:"):
        rest = rest.replace("{audit-budget}", "audit-budget", 1)
    elif rest.startswith("dry:{") and "}:" in rest:
        did, _, part = rest.removeprefix("dry:{").rpartition("}:")
        rest = f"dry:{did}:{part}"
    return (keys.P + rest).encode()


async def move_old_keys(r: redis.asyncio.Redis[bytes]) -> None:
    """Move what the old layout left (see the module's text); nothing once marked done."""
    if await r.get(keys.LAYOUT) == VERSION:
        return
    moved = taken = 0
    batch: list[tuple[bytes, bytes]] = []
    async for old in r.scan_iter(match=OLD_P + "*", count=10_000):
        new = new_name(old)
        if new is not None:
            batch.append((old, new))
        if len(batch) >= BATCH:
            done, kept = await _rename(r, batch)
            moved, taken, batch = moved + done, taken + kept, []
    done, kept = await _rename(r, batch)
    moved, taken = moved + done, taken + kept
    await r.set(keys.LAYOUT, VERSION)
    if moved or taken:
        log.warning(
            "moved %d scheduler keys from %s* to %s*; %d left where they were, their "
            "new names already taken (written by a scheduler of the old layout)",
            moved,
            OLD_P,
            keys.P,
            taken,
        )


async def _rename(
    r: redis.asyncio.Redis[bytes], batch: list[tuple[bytes, bytes]]
) -> tuple[int, int]:
    """(moved, left because the new name was taken); a key already gone is neither."""
    if not batch:
        return 0, 0
    pipe = r.pipeline(transaction=False)
    for old, new in batch:
        pipe.renamenx(old, new)
    answers = await pipe.execute(raise_on_error=False)
    moved = sum(1 for a in answers if a is True or a == 1)
    taken = sum(1 for a in answers if not isinstance(a, ResponseError) and not a)
    return moved, taken
