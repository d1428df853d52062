"""Webhook signatures in the Standard Webhooks scheme (standardwebhooks.com), pure.

Every delivery carries three headers:

    webhook-id         the message id: one per (event, webhook), the same on every retry
    webhook-timestamp  seconds since the epoch when this attempt was signed
    webhook-signature  space-separated `v1,<base64 HMAC-SHA256>` of
                       `<webhook-id>.<webhook-timestamp>.<raw body>`, one per active key

Signing the id and the timestamp with the body is what makes a captured delivery useless
later: a receiver rejects timestamps outside its tolerance (`TOLERANCE_S` here) and ids it
has already processed. While a webhook's secret is being rotated two keys are active and
the header carries both signatures, so a receiver holding either key accepts it.

A secret written `whsec_<base64>` is the key those bytes decode to, as the scheme's own
libraries read it; any other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

VERSION = "v1"
TOLERANCE_S = 300
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """A delivery whose headers are missing, stale or not signed by any of the keys."""


def secret_key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            pass  # not base64 after all: the whole string is the key
    return secret.encode()


def sign(secret: str, message_id: str, timestamp_s: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`."""
    content = f"{message_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


def headers(
    secrets: Sequence[str], message_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """The three signature headers of one delivery attempt, signed with every active key."""
    if not secrets:
        raise ValueError("a webhook needs at least one secret to sign with")
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp_s),
        SIGNATURE_HEADER: " ".join(sign(s, message_id, timestamp_s, body) for s in secrets),
    }


def verify(
    secrets: Sequence[str],
    received: Mapping[str, str],
    body: bytes,
    now_s: int,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """A receiver's check: the delivery's message id if one of its signatures matches one of
    `secrets` and its timestamp is within `tolerance_s` of `now_s`; raises otherwise.
    (`received` must look headers up case-insensitively, as HTTP servers' header maps do, or
    use the lower-case names.) Remembering the ids already processed, for longer than the
    tolerance, is the receiver's part of replay protection."""
    message_id = received.get(ID_HEADER, "")
    stamp = received.get(TIMESTAMP_HEADER, "")
    signatures = received.get(SIGNATURE_HEADER, "")
    if not message_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    try:
        timestamp_s = int(stamp)
    except ValueError:
        raise WebhookVerificationError(
            f"webhook-timestamp {stamp[:20]!r} is not an integer"
        ) from None
    if abs(now_s - timestamp_s) > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is {now_s - timestamp_s} s from now (tolerance {tolerance_s} s)"
        )
    offered = [s for s in signatures.split(" ") if s.startswith(VERSION + ",")]
    for secret in secrets:
        expected = sign(secret, message_id, timestamp_s, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return message_id
    raise WebhookVerificationError("no signature matches")
