"""AWS Signature Version 4 for S3-compatible object stores (AWS S3, MinIO, Ceph RGW).

Pure: the time and the payload's SHA-256 are inputs, nothing here does I/O. Only what
ota/object_store.py sends is supported: headers signed as given (host, x-amz-date,
x-amz-content-sha256, and range when present), a payload whose SHA-256 is known before
it is sent (for a content-addressed package it is the package's own name, so the store
checks the upload against it), and a query of the multipart upload's parameters
(`uploads`, `partNumber`, `uploadId`).

The canonical query string (AWS's "Create a canonical request" for SigV4): every name and
value percent-encoded on its own (all but A-Z a-z 0-9 - _ . ~, upper-case hex, so `/`,
`+`, `=` and space become %2F, %2B, %3D, %20), the pairs sorted by encoded name, then
value (byte order: upper case before lower case), written `name=value` even when the
value is empty (`?uploads` signs as `uploads=`), joined by `&`. `query_string` gives the
same text, so the URL sent is exactly the one signed.
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


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def query_string(query: Mapping[str, str]) -> str:
    """The canonical query string of `query` (see the module docstring); "" for none."""
    pairs = sorted((_encode(name), _encode(value)) for name, value in query.items())
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_request(
    method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(the canonical request, the signed-headers list) for a request whose `headers` hold
    host, x-amz-date and x-amz-content-sha256; every header given is signed."""
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
            query_string(query or {}),
            "".join(f"{name}:{lowered[name]}\n" for name in names),
            signed_headers,
            lowered["x-amz-content-sha256"],
        ]
    )
    return canonical, signed_headers


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
    query: Mapping[str, str] | None = None,
) -> str:
    """The Authorization header for a request whose `headers` (lower- or mixed-case names)
    already hold host, x-amz-date and x-amz-content-sha256; every header given is signed."""
    canonical, signed_headers = canonical_request(method, path, headers, query)
    stamp = next(v.strip() for name, v in headers.items() if name.lower() == "x-amz-date")
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
