"""The console's settings, read once from OTA_ environment variables at start-up."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from ota.settings import PREFIX, Env, SettingsError
from scheduler.console.login_guard import MAX_CLIENTS, LoginLimits
from scheduler.settings import Scope


@dataclass(frozen=True)
class ConsoleSettings:
    session_key: bytes = field(repr=False)  # signs session cookies and CSRF tokens
    session_ttl_s: int
    secure_cookie: bool  # force the Secure flag (behind a TLS-terminating proxy)
    live_interval_s: float  # how often a watched task's aggregates are read for SSE
    login_limits: LoginLimits = field(default_factory=LoginLimits)  # console/login_guard.py

    @classmethod
    def from_env(
        cls, api_keys: Mapping[str, frozenset[Scope]], environ: Mapping[str, str] | None = None
    ) -> ConsoleSettings:
        env = Env(environ)
        raw = env.secret(
            "CONSOLE_SESSION_KEY", ""
        )  # or the file OTA_CONSOLE_SESSION_KEY_FILE names
        if raw and len(raw) < 32:
            raise SettingsError(f"{PREFIX}CONSOLE_SESSION_KEY must be at least 32 characters")
        return cls(
            session_key=raw.encode() if raw else derived_key(api_keys),
            session_ttl_s=env.integer("CONSOLE_SESSION_TTL_S", 12 * 3600, min_value=60),
            secure_cookie=env.flag("CONSOLE_SECURE_COOKIE", False),
            live_interval_s=env.number("CONSOLE_LIVE_INTERVAL_S", 1.0, min_value=0.1, max_value=60),
            login_limits=LoginLimits(
                burst=env.integer("CONSOLE_LOGIN_FAILURE_BURST", 10, min_value=1),
                per_min=env.number(
                    "CONSOLE_LOGIN_FAILURES_PER_MIN", 6.0, min_value=0.1, max_value=600
                ),
                max_clients=MAX_CLIENTS,
            ),
        )


def derived_key(api_keys: Mapping[str, frozenset[Scope]]) -> bytes:
    """Without OTA_CONSOLE_SESSION_KEY, a key derived from every API key together: the same
    on every replica (they share OTA_API_KEYS), unknown to anyone who lacks even one of the
    keys, and changed (logging everyone out) whenever a key is added or revoked."""
    material = "\n".join(sorted(api_keys)).encode()
    return hmac.new(material, b"ota-console-session-v1", hashlib.sha256).digest()
