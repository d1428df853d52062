"""A webhook's record on its compacted topic (`ota.webhooks`, key = webhook id), pure.

The record is the registration as Redis holds it, except that each secret is sealed
(scheduler/secretbox.py, `WEBHOOK_SECRETS`) under `sealed`: `{field: {"kid", "box"}}`,
`box` the base64 of nonce || ciphertext || tag. The associated data names the webhook id
and the field, so a box copied onto another webhook, or from `previous_secret` to
`secret`, does not open. A deletion is a tombstone (no value).

    UnreadableRecord    a record that cannot be restored: malformed, another webhook's,
                        or a secret that does not open
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from scheduler.secretbox import SecretBox, SecretBoxError

SECRET_FIELDS = ("secret", "previous_secret")
SEALED = "sealed"


class UnreadableRecord(Exception):  # noqa: N818 - names what is wrong
    """A webhook record that cannot be restored."""


def subject(hid: str, field: str) -> str:
    # The field first: it never holds "|", so the webhook id after it is unambiguous.
    return f"{field}|{hid}"


def seal(box: SecretBox, hook: Mapping[str, Any]) -> bytes:
    """The topic's value for `hook`: every field but the secrets, which are sealed."""
    doc = {k: v for k, v in hook.items() if k not in SECRET_FIELDS}
    sealed = {}
    for field in SECRET_FIELDS:
        if hook.get(field):
            kid, boxed = box.seal(subject(hook["id"], field), hook[field])
            sealed[field] = {"kid": kid, "box": base64.b64encode(boxed).decode()}
    doc[SEALED] = sealed
    return orjson.dumps(doc)


def open_record(box: SecretBox, hid: str, raw: bytes) -> dict[str, Any]:
    """The registration the record of key `hid` holds, its secrets opened."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableRecord(f"webhook {hid!r}: the record is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("id") != hid:
        raise UnreadableRecord(f"webhook {hid!r}: the record is not this webhook's")
    sealed = doc.pop(SEALED, None)
    if not isinstance(sealed, dict) or "secret" not in sealed or set(sealed) - {*SECRET_FIELDS}:
        raise UnreadableRecord(f"webhook {hid!r}: the record's sealed secrets are malformed")
    for field, item in sealed.items():
        doc[field] = _open(box, hid, field, item)
    return doc


def _open(box: SecretBox, hid: str, field: str, item: Any) -> str:
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("kid", "box")):
        raise UnreadableRecord(f"webhook {hid!r}: sealed {field} is malformed")
    try:
        boxed = base64.b64decode(item["box"], validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: not ASCII
        raise UnreadableRecord(f"webhook {hid!r}: sealed {field} is not base64") from exc
    try:
        return box.open(subject(hid, field), item["kid"], boxed)
    except SecretBoxError as exc:
        raise UnreadableRecord(f"webhook {hid!r}: sealed {field} does not open: {exc}") from exc
