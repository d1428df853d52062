"""Download tokens: who may fetch which package until when.

A token is `v1.<key id>.<expiry epoch s>.<base64url device id>.<base64url mac>` where
mac = HMAC-SHA256(key, "v1|kid|expiry|device_id|package_sha256"). The package is bound
by the MAC only (the download URL names it), so a token for one package fails on any
other. Verification answers one of four verdicts; the MAC is checked (in constant time)
before the expiry so a forged token never learns whether it would have expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from enum import Enum

from ota.settings import TokenKeys

VERSION = "v1"
MAX_TOKEN_CHARS = 1024


class Verdict(Enum):
    VALID = "valid"
    MALFORMED = "malformed"  # not a token at all
    WRONG = "wrong"  # unknown key, bad signature, another device or package
    EXPIRED = "expired"  # genuine, but past its expiry


@dataclass(frozen=True)
class TokenCheck:
    verdict: Verdict
    device_id: str | None = None
    expires_s: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, kid: str, expires_s: int, device_id: str, package_sha256: str) -> bytes:
    message = f"{VERSION}|{kid}|{expires_s}|{device_id}|{package_sha256}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def mint(keys: TokenKeys, *, device_id: str, package_sha256: str, expires_s: int) -> str:
    """A token for `device_id` to fetch the package with that SHA-256 until `expires_s`."""
    kid = keys.current
    mac = _mac(keys.secrets[kid], kid, expires_s, device_id, package_sha256.lower())
    return f"{VERSION}.{kid}.{expires_s}.{_b64(device_id.encode())}.{_b64(mac)}"


def verify(
    keys: TokenKeys, token: str, *, package_sha256: str, now_s: int, device_id: str | None = None
) -> TokenCheck:
    """Check `token` for this package (and device, when the caller knows it) at `now_s`."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return TokenCheck(Verdict.MALFORMED)
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != VERSION:
        return TokenCheck(Verdict.MALFORMED)
    _, kid, expiry_text, device_b64, mac_b64 = parts
    if not expiry_text.isdigit() or len(expiry_text) > 12:
        return TokenCheck(Verdict.MALFORMED)
    try:
        token_device = _unb64(device_b64).decode("utf-8")
        mac = _unb64(mac_b64)
    except (binascii.Error, ValueError):
        return TokenCheck(Verdict.MALFORMED)
    if len(mac) != hashlib.sha256().digest_size or not token_device:
        return TokenCheck(Verdict.MALFORMED)
    secret = keys.secrets.get(kid)
    if secret is None:
        return TokenCheck(Verdict.WRONG)
    expires_s = int(expiry_text)
    expected = _mac(secret, kid, expires_s, token_device, package_sha256.lower())
    if not hmac.compare_digest(mac, expected):
        return TokenCheck(Verdict.WRONG)
    if device_id is not None and device_id != token_device:
        return TokenCheck(Verdict.WRONG)
    if now_s >= expires_s:
        return TokenCheck(Verdict.EXPIRED, token_device, expires_s)
    return TokenCheck(Verdict.VALID, token_device, expires_s)
