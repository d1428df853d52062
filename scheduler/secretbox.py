"""Secrets at rest: AES-256-GCM under keys named by key id, so keys can rotate.

A sealed secret is its key id plus `nonce (12 bytes) || ciphertext || tag (16 bytes)`. The
associated data binds it to its purpose, its subject and the key id: a device secret to
its device id (`DEVICE_SECRETS`, the format the device broker opens too), a webhook secret
to its webhook id and field (`WEBHOOK_SECRETS`). A sealed value copied onto another
subject's record, moved between purposes, or relabelled with another key id fails to open
instead of authenticating the wrong device or signing for the wrong webhook.

Keys come from `OTA_CREDENTIAL_KEYS` as `kid:base64key[,kid:base64key...]`: the first seals,
all open (list a retired key after the current one until no record uses it).
Pure apart from the random nonce (a parameter in tests).

    SecretBoxError          a sealed secret cannot be opened
    ├── UnknownKeyId        its key id is not configured
    └── Tampered            the tag does not verify (wrong device, key or bytes)
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ota.settings import PREFIX, SettingsError

NONCE_BYTES = 12
KEY_BYTES = 32  # AES-256
MAX_KID_CHARS = 16  # stored with every record: keep it short
# A development key so the local stack and tests run with nothing configured; it is public,
# so the scheduler refuses it once the deployment configures its own secrets (settings).
DEV_CREDENTIAL_KEYS = "dev0:6B9do11xnNJnuYi9LJKHuS5PIRgh1jGd9+8yzBEBn8c="


class SecretBoxError(Exception):
    """A sealed secret cannot be opened."""


class UnknownKeyId(SecretBoxError):  # noqa: N818 - names what is wrong
    pass


class Tampered(SecretBoxError):  # noqa: N818 - names what is wrong
    pass


@dataclass(frozen=True)
class CredentialKeys:
    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    @classmethod
    def parse(cls, spec: str) -> CredentialKeys:
        name = f"{PREFIX}CREDENTIAL_KEYS"
        keys: dict[str, bytes] = {}
        for item in spec.split(","):
            kid, sep, encoded = item.strip().partition(":")
            if not sep or not kid or not encoded:
                raise SettingsError(f"{name} entry {kid[:20]!r} is not kid:base64key")
            if not (kid.isascii() and kid.isalnum() and len(kid) <= MAX_KID_CHARS):
                raise SettingsError(
                    f"{name} key id {kid[:20]!r} must be 1-{MAX_KID_CHARS} letters or digits"
                )
            if kid in keys:
                raise SettingsError(f"{name} lists key id {kid!r} twice")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise SettingsError(f"{name} key {kid!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise SettingsError(
                    f"{name} key {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                    "(make one with: head -c 32 /dev/urandom | base64)"
                )
            keys[kid] = key
        return cls(current=next(iter(keys)), keys=keys)


@dataclass(frozen=True)
class Purpose:
    """What a box seals: the associated data's prefix, and the noun its errors name."""

    aad_prefix: bytes
    noun: str


# The device prefix is shared with the broker (deploy/broker's SecretBox.java): never change it.
DEVICE_SECRETS = Purpose(b"ota-device-secret-v1|", "device")
WEBHOOK_SECRETS = Purpose(b"ota-webhook-secret-v1|", "webhook")


class SecretBox:
    def __init__(self, keys: CredentialKeys, purpose: Purpose = DEVICE_SECRETS) -> None:
        self.current = keys.current
        self._purpose = purpose
        # One cipher object per key, made once: opening is on every device connect.
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.keys.items()}

    def _aad(self, subject: str, kid: str) -> bytes:
        # kid is letters and digits, so the subject after it is unambiguous.
        return self._purpose.aad_prefix + kid.encode() + b"|" + subject.encode()

    def seal(self, subject: str, secret: str, nonce: bytes | None = None) -> tuple[str, bytes]:
        """(key id, nonce || ciphertext || tag) of a secret under the current key."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        sealed = self._ciphers[self.current].encrypt(
            nonce, secret.encode(), self._aad(subject, self.current)
        )
        return self.current, nonce + sealed

    def open(self, subject: str, kid: str, box: bytes) -> str:
        noun = self._purpose.noun
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownKeyId(f"{noun} {subject!r}: key id {kid!r} is not configured")
        try:
            plain = cipher.decrypt(box[:NONCE_BYTES], box[NONCE_BYTES:], self._aad(subject, kid))
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            raise Tampered(
                f"{noun} {subject!r}: the sealed secret does not verify under key {kid!r}"
            ) from None
        return plain.decode()
