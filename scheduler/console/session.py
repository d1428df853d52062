"""Console sessions: a signed cookie naming the API key by a keyed fingerprint, never the
key itself, plus the session's CSRF token. Pure: no I/O, the time is passed in.

Cookie value: `base64url(json payload) "." base64url(HMAC-SHA256(session key, payload))`.
The payload holds the key's fingerprint, the CSRF token, the expiry and the key's audit
fingerprint (what the console's audit records name); the scopes are
looked up from the configured keys on every request, so a key removed from OTA_API_KEYS
stops working in the console as soon as the scheduler restarts with the new list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from scheduler.settings import Scope

COOKIE = "ota_console"
LOGIN_COOKIE = "ota_console_login"  # carries the login form's CSRF token before a session
LOGIN_TTL_S = 600


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str  # fingerprint of the API key; "" for the pre-login cookie
    csrf: str
    expires_s: int
    who: str = ""  # the key as audit records name it (scheduler/audit.key_id)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(session_key: bytes, api_key: str) -> str:
    return hmac.new(session_key, b"key|" + api_key.encode(), hashlib.sha256).hexdigest()[:32]


def new_session(key_id: str, now_s: int, ttl_s: int, who: str = "") -> Session:
    return Session(key_id, secrets.token_urlsafe(24), now_s + ttl_s, who)


def encode(session_key: bytes, session: Session) -> str:
    fields = {"k": session.key_id, "c": session.csrf, "e": session.expires_s, "a": session.who}
    payload = _b64(orjson.dumps(fields))
    mac = hmac.new(session_key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def decode(session_key: bytes, cookie: str | None, now_s: int) -> Session | None:
    """The session in a cookie, or None when absent, forged, malformed or expired."""
    if not cookie or cookie.count(".") != 1:
        return None
    payload, mac = cookie.split(".")
    want = hmac.new(session_key, payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(want, _unb64(mac)):
            return None
        data = orjson.loads(_unb64(payload))
        session = Session(str(data["k"]), str(data["c"]), int(data["e"]), str(data["a"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires_s > now_s else None


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf.encode(), str(submitted).encode())


class KeyBook:
    """The configured API keys by fingerprint: which scopes a session's key carries."""

    def __init__(self, session_key: bytes, api_keys: Mapping[str, frozenset[Scope]]) -> None:
        self._session_key = session_key
        self._scopes = {fingerprint(session_key, k): s for k, s in api_keys.items()}

    def login(self, api_key: str) -> str | None:
        """The fingerprint of a key that may use the console (read scope), else None."""
        key_id = fingerprint(self._session_key, api_key)
        granted = frozenset[Scope]()
        for known, scopes in self._scopes.items():
            if hmac.compare_digest(known, key_id):
                granted = scopes
        return key_id if Scope.READ in granted else None

    def scopes(self, key_id: str) -> frozenset[Scope]:
        return self._scopes.get(key_id, frozenset())
