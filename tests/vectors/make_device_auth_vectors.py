"""Writes tests/vectors/device_auth.json: device authentication cases answered by the real
Python code, which the broker's Java port (deploy/broker: IotdaCheck, CredentialCheck,
SecretBox) must answer the same (DeviceAuthVectorsTest); tests/unit/ota/
test_device_auth_vectors.py checks the Python code still does.

Each case is what a device sends (client id, user name, password), the device's stored
record as scheduler/credentials.py keeps it (`{kid, box, on}`, a field null when absent; the
whole record null for no record) and the platform's clock; the answer is
`Credentials.verify`'s reason, run over the record (the one Redis read replaced by a dict).
`auth_unavailable`: verify raised (a record that does not open is the platform's fault: the
scheduler answers 500 and the broker refuses with auth_unavailable).

Secrets are sealed with the public development key (`DEV_CREDENTIAL_KEYS`) and a nonce
derived from the case's name, so the file is the same at every run.

Usage: .venv/bin/python tests/vectors/make_device_auth_vectors.py [--check]
(--check: exit 1 if the committed file differs from what the code answers now).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import redis.asyncio

from ota.device_auth import HOUR_MS, SignType, password_for, timestamp_for
from scheduler.credentials import Credentials, CredentialUnreadable, record_key
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, NONCE_BYTES, CredentialKeys, SecretBox

OUT = Path(__file__).with_name("device_auth.json")
UNAVAILABLE = "auth_unavailable"
NOW_MS = 1_796_474_096_000  # 2026-12-05 12:34:56 UTC
STAMP = timestamp_for(NOW_MS)  # 2026120512

Record = dict[str, str | None]


class _OneRecord:
    """The one Redis call verify makes (HMGET of the device's record), from a dict."""

    def __init__(self, records: dict[str, Record]) -> None:
        self._records = records

    def register_script(self, _script: str) -> None:
        return None

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        record = self._records.get(key, {})
        return [None if record.get(f) is None else str(record[f]).encode() for f in fields]


@dataclass(frozen=True)
class Case:
    name: str
    client_id: str
    username: str
    password: str
    record: Record | None
    now_ms: int = NOW_MS


BOX = SecretBox(CredentialKeys.parse(DEV_CREDENTIAL_KEYS))


def seal(name: str, device_id: str, secret: str, on: str | None = "1") -> Record:
    nonce = hashlib.sha256(name.encode()).digest()[:NONCE_BYTES]
    kid, box = BOX.seal(device_id, secret, nonce)
    return {"kid": kid, "box": base64.b64encode(box).decode(), "on": on}


def stamp_at(hours: int) -> str:
    return timestamp_for(NOW_MS + hours * HOUR_MS)


def device(
    name: str,
    device_id: str,
    secret: str = "s3cret-Device-Key_01",
    *,
    sign: SignType = SignType.TIME_CHECK,
    stamp: str = STAMP,
    password: str | None = None,
    username: str | None = None,
    record: Record | bool | None = True,
    on: str | None = "1",
) -> Case:
    """A device sending `device_id`'s credentials for `stamp`, with one thing changed."""
    stored: Record | None
    if record is True:
        stored = seal(name, device_id, secret, on)
    elif record is False:
        stored = None
    else:
        stored = record
    return Case(
        name,
        f"{device_id}_0_{sign.value}_{stamp}",
        device_id if username is None else username,
        password_for(secret, stamp) if password is None else password,
        stored,
    )


def tampered(record: Record, byte: int) -> Record:
    box = bytearray(base64.b64decode(str(record["box"])))
    box[byte] ^= 0x01
    return record | {"box": base64.b64encode(bytes(box)).decode()}


def cases() -> list[Case]:
    no_check = SignType.NO_TIME_CHECK
    other = seal("copied", "dev-other", "s3cret-Device-Key_01")
    own = seal("tampered", "dev-1", "s3cret-Device-Key_01")
    out = [
        device("ok, sign type 1, this hour", "dev-1"),
        device("ok, sign type 0, this hour", "dev-1", sign=no_check),
        device("ok, device id with underscores", "my_dev_1_0_1"),
        device("ok, device id with every allowed sign", "a-b.c:d@e_F9"),
        device("ok, a 128-character device id", "d" * 128),
        device("ok, a secret that is not ASCII", "dev-u8", "sëcret-ünïcode"),
        device("ok, sign type 1, the hour before", "dev-1", stamp=stamp_at(-1)),
        device("ok, sign type 1, the hour after", "dev-1", stamp=stamp_at(1)),
        device("clock_skew, sign type 1, two hours before", "dev-1", stamp=stamp_at(-2)),
        device("clock_skew, sign type 1, two hours after", "dev-1", stamp=stamp_at(2)),
        device("ok, sign type 0, an old hour", "dev-1", sign=no_check, stamp="2020010100"),
        device("ok, sign type 0, a future hour", "dev-1", sign=no_check, stamp="2099123123"),
        device(
            "ok, sign type 0, 29 February of a leap year",
            "dev-1",
            sign=no_check,
            stamp="2028022912",
        ),
        device("ok, sign type 0, year 1", "dev-1", sign=no_check, stamp="0001010100"),
        device(
            "clock_skew before the password: skewed and wrong",
            "dev-1",
            stamp=stamp_at(-5),
            password="0" * 64,
        ),
        device(
            "clock_skew before the look-up: skewed and unknown",
            "dev-nobody",
            stamp=stamp_at(3),
            record=False,
        ),
        device("username_mismatch", "dev-1", username="dev-2"),
        device("username_mismatch, empty user name (none sent)", "dev-1", username=""),
        device("username_mismatch, the id's first part", "my_dev_1", username="my"),
        device("unknown_device, no record", "dev-nobody", record=False),
        device("unknown_device, not registrable: slash", "dev/1", record=False),
        device("unknown_device, not registrable: plus", "dev+1", record=False),
        device("unknown_device, not registrable: not ASCII", "dév-1"),
        device("unknown_device, not registrable: 129 characters", "d" * 129),
        device(
            "unknown_device, record without kid",
            "dev-1",
            record={"kid": None, "box": own["box"], "on": "1"},
        ),
        device(
            "unknown_device, record without box",
            "dev-1",
            record={"kid": "dev0", "box": None, "on": "1"},
        ),
        device(
            "unknown_device, only the on flag",
            "dev-1",
            record={"kid": None, "box": None, "on": "0"},
        ),
        device("bad_password, another secret", "dev-1", password=password_for("other", STAMP)),
        device(
            "bad_password, another hour's password",
            "dev-1",
            password=password_for("s3cret-Device-Key_01", stamp_at(-1)),
        ),
        device(
            "bad_password, upper-case hex",
            "dev-1",
            password=password_for("s3cret-Device-Key_01", STAMP).upper(),
        ),
        device("bad_password, empty", "dev-1", password=""),
        device("bad_password, not ASCII", "dev-1", password="pässwörd-ü"),
        device("bad_password, the secret itself", "dev-1", password="s3cret-Device-Key_01"),
        device("disabled", "dev-1", on="0"),
        device("disabled before the password", "dev-1", on="0", password="0" * 64),
        device("disabled, no on flag", "dev-1", on=None),
        device("disabled, on flag not 1", "dev-1", on="true"),
        device(UNAVAILABLE + ", tampered ciphertext", "dev-1", record=tampered(own, 14)),
        device(UNAVAILABLE + ", tampered nonce", "dev-1", record=tampered(own, 0)),
        device(UNAVAILABLE + ", tampered tag", "dev-1", record=tampered(own, -1)),
        device(UNAVAILABLE + ", key id not configured", "dev-1", record=own | {"kid": "dev9"}),
        device(UNAVAILABLE + ", a box copied from another device", "dev-1", record=other),
        device(
            UNAVAILABLE + ", box too short",
            "dev-1",
            record=own | {"box": base64.b64encode(b"short").decode()},
        ),
        device(UNAVAILABLE + ", box empty", "dev-1", record=own | {"box": ""}),
    ]
    malformed = [
        "no-underscores",
        "dev-1_0_1",
        "_0_1_" + STAMP,
        "dev-1_1_1_" + STAMP,
        "dev-1_0_2_" + STAMP,
        "dev-1_0__" + STAMP,
        "dev-1_0_1_" + STAMP[:8],
        "dev-1_0_1_" + STAMP + "0",
        "dev-1_0_1_2026130112",
        "dev-1_0_1_2026120524",
        "dev-1_0_0_2026022912",
        "dev-1_0_0_0000010100",
        "dev-1_0_1_" + "".join(chr(0xFF10 + int(d)) for d in STAMP),  # full-width digits
        "dev-1_0_1_+026120512",
        "dev-1_0_1_2026 20512",
        "d" * 246 + "_0_1_" + STAMP,
    ]
    out += [
        Case(f"malformed_client_id: {cid[:40]!r}", cid, cid.split("_")[0], "x", None)
        for cid in malformed
    ]
    # 256 characters exactly: parses (then too long to register).
    exact = "d" * 241 + "_0_1_" + STAMP
    out.append(Case("unknown_device, a 256-character client id", exact, "d" * 241, "x", None))
    assert len({c.name for c in out}) == len(out), "case names must be unique"
    return out


async def answer(case: Case) -> str:
    device_id = case.client_id.rsplit("_", 3)[0]
    records = {} if case.record is None else {record_key(device_id): case.record}
    fake = cast("redis.asyncio.Redis[bytes]", _OneRecord(records))
    credentials = Credentials(fake, BOX, [])
    try:
        decision = await credentials.verify(
            case.client_id, case.username, case.password, case.now_ms
        )
    except CredentialUnreadable:  # the endpoint's 500
        return UNAVAILABLE
    return decision.reason.value


def vectors() -> dict[str, Any]:
    async def all_answers() -> list[dict[str, Any]]:
        return [
            {
                "name": case.name,
                "client_id": case.client_id,
                "username": case.username,
                "password": case.password,
                "record": case.record,
                "now_ms": case.now_ms,
                "expected": await answer(case),
            }
            for case in cases()
        ]

    return {
        "about": "made by tests/vectors/make_device_auth_vectors.py from ota.device_auth and "
        "scheduler.credentials.verify; expected auth_unavailable = verify raised (HTTP 500)",
        "credential_keys": DEV_CREDENTIAL_KEYS,
        "cases": asyncio.run(all_answers()),
    }


def render() -> bytes:
    return orjson.dumps(vectors(), option=orjson.OPT_INDENT_2) + b"\n"


def main(argv: list[str]) -> int:
    logging.disable(logging.ERROR)  # verify logs the unreadable records: expected here
    made = render()
    if "--check" in argv:
        if OUT.read_bytes() != made:
            print(f"{OUT} is not what the code answers now: run {__file__}", file=sys.stderr)
            return 1
        return 0
    OUT.write_bytes(made)
    print(f"wrote {OUT}: {len(orjson.loads(made)['cases'])} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
