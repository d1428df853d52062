"""Detached package signatures, checked at upload against the configured public keys.

The keys, their ids and the check itself are `ota.package_signing` (devices make the same
check). The key file may hold several PEM public keys: during a rotation, the old and the
new one. A package is accepted when any verifies it, and it records which one (its key
id), so its upgrade commands name the key devices must check it with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ota import package_signing
from ota.package_signing import PublicKey
from scheduler.errors import ValidationError

__all__ = ["PublicKey", "decode_signature", "load_public_keys", "verify"]


def load_public_keys(path: Path) -> dict[str, PublicKey]:
    """The public keys of a PEM file, by key id (a bad file fails the start)."""
    try:
        return package_signing.load_public_keys(path.read_bytes())
    except package_signing.KeyFileError as exc:
        raise ValueError(f"{path}: {exc}") from None


def decode_signature(text: str) -> bytes:
    """The X-OTA-Signature header's bytes."""
    raw = package_signing.decode_signature(text)
    if raw is None:
        raise ValidationError(
            "X-OTA-Signature must be base64 of 1-256 bytes",
            code="bad_signature",
            field="X-OTA-Signature",
        )
    return raw


def verify(keys: Mapping[str, PublicKey], signature: bytes, sha256_hex: str) -> str:
    """The id of the configured key that verifies the signature over the digest."""
    for kid, key in keys.items():
        if package_signing.verifies(key, signature, sha256_hex):
            return kid
    raise ValidationError(
        "package signature does not verify against the configured public key"
        + ("s" if len(keys) > 1 else ""),
        code="bad_signature",
        field="X-OTA-Signature",
    )
