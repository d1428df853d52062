"""AWS Signature Version 4 for S3-compatible object stores (AWS S3, MinIO, Ceph RGW).

Pure: the time and the payload's SHA-256 are inputs, nothing here does I/O. Only what
ota/object_store.py sends is supported: a request without a query string, headers
signed as given (host, x-amz-date, x-amz-content-sha256, and range when present), and a
payload whose SHA-256 is known before it is sent (for a content-addressed package it is
the package's own name, so the store checks the upload against it).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key=<hidden>)"


def amz_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    path: str,
    headers: Mapping[str, str],
    *,
    credentials: Credentials,
    region: str,
    service: str = "s3",
) -> str:
    """The Authorization header for a request whose `headers` (lower- or mixed-case names)
    already hold host, x-amz-date and x-amz-content-sha256; every header given is signed."""
    lowered = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    for needed in ("host", "x-amz-date", "x-amz-content-sha256"):
        if needed not in lowered:
            raise ValueError(f"SigV4: the {needed} header is required")
    names = sorted(lowered)
    signed_headers = ";".join(names)
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/-_.~"),
            "",  # no query string
            "".join(f"{name}:{lowered[name]}\n" for name in names),
            signed_headers,
            lowered["x-amz-content-sha256"],
        ]
    )
    stamp = lowered["x-amz-date"]
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + credentials.secret_key).encode(), stamp[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
