"""Device secrets at rest: sealing, key rotation, tampering, and the settings that hold the keys."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from ota.settings import SettingsError
from scheduler.secretbox import (
    DEV_CREDENTIAL_KEYS,
    NONCE_BYTES,
    WEBHOOK_SECRETS,
    CredentialKeys,
    SecretBox,
    Tampered,
    UnknownKeyId,
)
from scheduler.settings import DEV_API_KEYS, SchedulerSettings, Scope, parse_api_keys

K1 = base64.b64encode(bytes(range(32))).decode()
K0 = base64.b64encode(bytes(range(32, 64))).decode()
BOTH = CredentialKeys.parse(f"k1:{K1},k0:{K0}")


def test_the_first_key_seals_and_every_key_opens() -> None:
    old = SecretBox(CredentialKeys.parse(f"k0:{K0}"))
    kid, box = old.seal("dev-1", "old-secret")
    assert kid == "k0"
    rotated = SecretBox(BOTH)
    assert rotated.current == "k1"
    assert rotated.open("dev-1", kid, box) == "old-secret"
    kid2, box2 = rotated.seal("dev-1", "new-secret")
    assert kid2 == "k1"
    assert rotated.open("dev-1", kid2, box2) == "new-secret"


@given(st.text(min_size=1, max_size=128), st.text(max_size=100))
def test_round_trip(device_id: str, secret: str) -> None:
    box = SecretBox(BOTH)
    kid, sealed = box.seal(device_id, secret)
    assert box.open(device_id, kid, sealed) == secret


def test_device_boxes_keep_the_format_the_broker_opens() -> None:
    # The associated data deploy/broker's SecretBox.java checks: prefix, key id, device id.
    nonce = bytes(NONCE_BYTES)
    _, sealed = SecretBox(BOTH).seal("dev-1", "secret", nonce)
    aad = b"ota-device-secret-v1|k1|dev-1"
    assert AESGCM(base64.b64decode(K1)).decrypt(nonce, sealed[NONCE_BYTES:], aad) == b"secret"


def test_a_box_of_one_purpose_does_not_open_as_another() -> None:
    kid, sealed = SecretBox(BOTH).seal("dev-1", "secret")
    with pytest.raises(Tampered, match="webhook 'dev-1'"):
        SecretBox(BOTH, WEBHOOK_SECRETS).open("dev-1", kid, sealed)


def test_the_secret_is_not_stored_in_clear() -> None:
    _, sealed = SecretBox(BOTH).seal("dev-1", "a-recognisable-device-secret")
    assert b"recognisable" not in sealed


def test_each_seal_draws_a_fresh_nonce() -> None:
    box = SecretBox(BOTH)
    assert box.seal("d", "s")[1] != box.seal("d", "s")[1]
    assert len(box.seal("d", "s")[1]) == NONCE_BYTES + len("s") + 16


def test_a_retired_key_id_is_refused() -> None:
    kid, sealed = SecretBox(BOTH).seal("dev-1", "secret")
    with pytest.raises(UnknownKeyId, match="k1"):
        SecretBox(CredentialKeys.parse(f"k0:{K0}")).open("dev-1", kid, sealed)


def test_another_device_or_key_id_cannot_open_it() -> None:
    box = SecretBox(BOTH)
    kid, sealed = box.seal("dev-1", "secret")
    with pytest.raises(Tampered):
        box.open("dev-2", kid, sealed)
    with pytest.raises(Tampered):
        box.open("dev-1", "k0", sealed)  # relabelled under the other configured key


@given(st.data())
def test_any_flipped_bit_is_refused(data: st.DataObject) -> None:
    box = SecretBox(BOTH)
    kid, sealed = box.seal("dev-1", "a-device-secret")
    i = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    flipped = bytearray(sealed)
    flipped[i // 8] ^= 1 << (i % 8)
    with pytest.raises(Tampered):
        box.open("dev-1", kid, bytes(flipped))


@pytest.mark.parametrize("box", [b"", b"short", bytes(NONCE_BYTES + 15)])
def test_truncated_boxes_are_refused(box: bytes) -> None:
    with pytest.raises(Tampered):
        SecretBox(BOTH).open("dev-1", "k1", box)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("k1", "is not kid:base64key"),
        (f":{K1}", "is not kid:base64key"),
        ("k1:", "is not kid:base64key"),
        (f"k-1:{K1}", "letters or digits"),
        (f"{'k' * 17}:{K1}", "letters or digits"),
        (f"k1:{K1},k1:{K0}", "twice"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(bytes(16)).decode()}", "16 bytes; AES-256 needs 32"),
    ],
)
def test_bad_key_settings_fail_fast(spec: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        CredentialKeys.parse(spec)
    assert K1 not in str(caught.value)
    assert K0 not in str(caught.value)


def test_keys_never_appear_in_repr() -> None:
    assert K1 not in repr(BOTH)
    settings = SchedulerSettings.from_env({"OTA_CREDENTIAL_KEYS": f"k1:{K1}"})
    assert K1 not in repr(settings)


def test_settings_read_the_keys() -> None:
    settings = SchedulerSettings.from_env({"OTA_CREDENTIAL_KEYS": f"k1:{K1},k0:{K0}"})
    assert settings.credential_keys.current == "k1"
    assert set(settings.credential_keys.keys) == {"k1", "k0"}
    assert settings.credential_dev_key is False


def test_unconfigured_development_uses_the_development_key() -> None:
    settings = SchedulerSettings.from_env({})
    assert settings.credential_dev_key is True
    assert settings.credential_keys == CredentialKeys.parse(DEV_CREDENTIAL_KEYS)


def test_a_configured_deployment_without_credential_keys_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="OTA_CREDENTIAL_KEYS is required"):
        SchedulerSettings.from_env({"OTA_TOKEN_KEYS": "k1:a-long-download-token-secret"})
    settings = SchedulerSettings.from_env(
        {"OTA_TOKEN_KEYS": "k1:a-long-download-token-secret", "OTA_CREDENTIAL_KEYS": f"k1:{K1}"}
    )
    assert settings.credential_dev_key is False


def test_broker_scope() -> None:
    keys = parse_api_keys("reader-key:read,broker-key-1:broker")
    assert keys["broker-key-1"] == frozenset({Scope.BROKER})
    assert Scope.BROKER in parse_api_keys(DEV_API_KEYS)["dev-broker-key"]
    assert Scope.BROKER not in parse_api_keys("writer-key:read+write")["writer-key"]
    with pytest.raises(SettingsError, match="broker key may carry no other scope"):
        parse_api_keys("broker-key-1:read+broker")
    with pytest.raises(SettingsError, match="read, write, read\\+write, admin or broker"):
        parse_api_keys("broker-key-1:brokers")
