"""Detached package signatures, checked at upload against one configured public key.

A signature covers the package's SHA-256 digest: Ed25519 signs the 32 digest bytes;
ECDSA P-256 is ECDSA-with-SHA-256 over the file (what `openssl dgst -sha256 -sign`
makes), checked here from the digest. So neither needs the file in memory.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from scheduler.errors import ValidationError

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def load_public_key(path: Path) -> PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError(f"{path} is neither an Ed25519 nor an ECDSA P-256 public key")


def decode_signature(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(
            "X-OTA-Signature is not base64", code="bad_signature", field="X-OTA-Signature"
        ) from None
    if not 0 < len(raw) <= 256:
        raise ValidationError(
            "X-OTA-Signature has an impossible length",
            code="bad_signature",
            field="X-OTA-Signature",
        )
    return raw


def verify(key: PublicKey, signature: bytes, sha256_hex: str) -> None:
    digest = bytes.fromhex(sha256_hex)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)
        else:
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        raise ValidationError(
            "package signature does not verify against the configured public key",
            code="bad_signature",
            field="X-OTA-Signature",
        ) from None
