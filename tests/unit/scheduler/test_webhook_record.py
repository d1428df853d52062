"""A webhook's record on its compacted topic: every field kept, secrets sealed and bound to
the webhook id, the field and the webhook purpose, anything else refused on restore."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from scheduler.secretbox import DEVICE_SECRETS, WEBHOOK_SECRETS, CredentialKeys, SecretBox
from scheduler.webhook_record import UnreadableRecord, open_record, seal, subject

K1 = base64.b64encode(bytes(range(32))).decode()
K0 = base64.b64encode(bytes(range(32, 64))).decode()
BOX = SecretBox(CredentialKeys.parse(f"k1:{K1},k0:{K0}"), WEBHOOK_SECRETS)
HID = "a" * 32
HOOK = {
    "id": HID,
    "url": "https://receiver.example/ota",
    "events": ["task_status"],
    "task_id": None,
    "created_ms": 1_700_000_000_000,
    "secret": "the-current-secret-0123",
}
ROTATING = {**HOOK, "previous_secret": "the-previous-secret-0123", "rotated_ms": 1_700_000_001_000}


@pytest.mark.parametrize("hook", [HOOK, ROTATING])
def test_a_record_opens_to_the_registration(hook: dict[str, Any]) -> None:
    assert open_record(BOX, HID, seal(BOX, hook)) == hook


def test_no_secret_is_in_the_record_in_clear() -> None:
    raw = seal(BOX, ROTATING)
    assert b"the-current-secret" not in raw
    assert b"the-previous-secret" not in raw
    assert set(orjson.loads(raw)["sealed"]) == {"secret", "previous_secret"}


def test_a_record_sealed_under_a_retired_current_key_still_opens() -> None:
    old = SecretBox(CredentialKeys.parse(f"k0:{K0}"), WEBHOOK_SECRETS)
    assert open_record(BOX, HID, seal(old, HOOK)) == HOOK


def test_a_record_under_another_webhooks_key_does_not_open() -> None:
    doc = orjson.loads(seal(BOX, HOOK))
    doc["id"] = "b" * 32  # the whole record relabelled: its boxes name the first webhook
    with pytest.raises(UnreadableRecord, match="does not open"):
        open_record(BOX, "b" * 32, orjson.dumps(doc))
    with pytest.raises(UnreadableRecord, match="not this webhook's"):
        open_record(BOX, "b" * 32, seal(BOX, HOOK))


def test_a_box_moved_to_the_other_field_does_not_open() -> None:
    doc = orjson.loads(seal(BOX, ROTATING))
    doc["sealed"]["secret"] = doc["sealed"]["previous_secret"]
    with pytest.raises(UnreadableRecord, match="sealed secret does not open"):
        open_record(BOX, HID, orjson.dumps(doc))


def test_a_device_secrets_box_does_not_open_as_a_webhook_secret() -> None:
    devices = SecretBox(CredentialKeys.parse(f"k1:{K1}"), DEVICE_SECRETS)
    kid, boxed = devices.seal(subject(HID, "secret"), "a-device-secret-value")
    doc = orjson.loads(seal(BOX, HOOK))
    doc["sealed"]["secret"] = {"kid": kid, "box": base64.b64encode(boxed).decode()}
    with pytest.raises(UnreadableRecord, match="does not open"):
        open_record(BOX, HID, orjson.dumps(doc))


def test_an_unknown_key_id_is_refused() -> None:
    only_k0 = SecretBox(CredentialKeys.parse(f"k0:{K0}"), WEBHOOK_SECRETS)
    with pytest.raises(UnreadableRecord, match="key id 'k1' is not configured"):
        open_record(only_k0, HID, seal(BOX, HOOK))


def _with_sealed(sealed: Any) -> bytes:
    return orjson.dumps({**{k: v for k, v in HOOK.items() if k != "secret"}, "sealed": sealed})


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        orjson.dumps({k: v for k, v in HOOK.items() if k != "secret"}),  # nothing sealed
        _with_sealed({}),
        _with_sealed({"secret": "plain"}),
        _with_sealed({"secret": {"kid": "k1"}}),
        _with_sealed({"secret": {"kid": "k1", "box": "***"}}),
        _with_sealed({"secret": {"kid": "k1", "box": "é"}}),
        _with_sealed({"secret": {"kid": "k1", "box": base64.b64encode(b"short").decode()}}),
        _with_sealed({**orjson.loads(seal(BOX, HOOK))["sealed"], "other": {}}),
    ],
)
def test_malformed_records_are_refused(raw: bytes) -> None:
    with pytest.raises(UnreadableRecord):
        open_record(BOX, HID, raw)
