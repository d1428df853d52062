"""What the edge needs of a request, and where it points: pure, no I/O.

Only `/packages/sha256/<64 lowercase hex>` names anything; every other target is a 404
before any file system call, so no path (dot segments, percent escapes, symlinks in
the URL) can reach outside the package store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

_PACKAGE_PATH = re.compile(rb"/packages/sha256/([0-9a-f]{64})")


@dataclass(slots=True)
class Request:
    method: str
    path: bytes
    query: bytes
    authorization: str | None = None
    range: str | None = None
    if_range: str | None = None
    keep_alive: bool = True


def package_of(path: bytes) -> str | None:
    """The package SHA-256 the path names, or None when it names nothing we serve."""
    found = _PACKAGE_PATH.fullmatch(path)
    return None if found is None else found[1].decode("ascii")


def is_package_path(target: bytes) -> bool:
    """Whether a request target is exactly a package path (no query, nothing to decode)."""
    return _PACKAGE_PATH.fullmatch(target) is not None


def token_of(authorization: str | None, query: bytes) -> str | None:
    """The download token: `Authorization: Bearer` (v1) first, else `?token=` (v2)."""
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if query:
        try:
            values = parse_qs(query.decode("ascii"), max_num_fields=32).get("token")
        except (UnicodeDecodeError, ValueError):
            return None
        if values:
            return values[0]
    return None
