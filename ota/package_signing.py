"""Detached package signatures: the keys, their ids, and the check a device makes.

A signature covers the package's SHA-256 digest: Ed25519 signs the 32 digest bytes;
ECDSA P-256 is ECDSA-with-SHA-256 over the file (what `openssl dgst -sha256 -sign`
makes), checked from the digest. So neither side needs the file in memory.

A key's id is the first 16 hex digits of the SHA-256 of its DER SubjectPublicKeyInfo
(`openssl pkey -pubin -in key.pem -outform DER | sha256sum | cut -c1-16`): the scheduler
records which key verified a package, the upgrade command names it, and a device that
trusts several keys (during a rotation) picks the one to check with. Upgrade commands
carry both in paras an IoTDA device does not know and ignores (`ota.protocol.PARA_SIGNATURE`,
`PARA_KEY_ID`). Pure: no I/O here; callers read the PEM files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

MAX_SIGNATURE_BYTES = 256  # Ed25519: 64, ECDSA P-256 DER: at most 72
KEY_ID = re.compile(r"[0-9a-f]{16}")
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----\s.*?-----END PUBLIC KEY-----", re.DOTALL)


class KeyFileError(ValueError):
    """A PEM bundle that does not hold usable public keys."""


def key_id(key: PublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def load_public_keys(pem: bytes) -> dict[str, PublicKey]:
    """Every public key of a PEM bundle (one or more `PUBLIC KEY` blocks), by key id.
    Each must be Ed25519 or ECDSA P-256; an empty bundle is an error too."""
    blocks = _PEM_BLOCK.findall(pem)
    if not blocks:
        raise KeyFileError("no PUBLIC KEY block in the PEM data")
    keys: dict[str, PublicKey] = {}
    for index, block in enumerate(blocks):
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"public key {index + 1} is unreadable: {exc}") from None
        if isinstance(key, ed25519.Ed25519PublicKey) or (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
        ):
            keys[key_id(key)] = key
        else:
            raise KeyFileError(f"public key {index + 1} is neither Ed25519 nor ECDSA P-256")
    return keys


def verifies(key: PublicKey, signature: bytes, sha256_hex: str) -> bool:
    digest = bytes.fromhex(sha256_hex)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)
        else:
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def decode_signature(text: str) -> bytes | None:
    """The signature's bytes, or None when `text` is not base64 of a plausible length."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if 0 < len(raw) <= MAX_SIGNATURE_BYTES else None


def refusal(
    trusted: Mapping[str, PublicKey],
    signature_b64: str | None,
    signer: str | None,
    sha256_hex: str,
) -> str | None:
    """Why a device that trusts `trusted` must not install the package with digest
    `sha256_hex` that a command sent with this signature and key id; None: install.

    A device that trusts no key checks nothing (only the SHA-256, as IoTDA devices do).
    One that trusts any refuses an unsigned package too: otherwise removing the
    signature from the command would be enough to get a package installed."""
    if not trusted:
        return None
    if not signature_b64 or not signer:
        return "the package is not signed"
    key = trusted.get(signer)
    if key is None:
        return f"the package is signed with key {signer[:16]!r}, which this device does not trust"
    raw = decode_signature(signature_b64)
    if raw is None or not verifies(key, raw, sha256_hex):
        return f"the package signature does not verify with key {signer}"
    return None
