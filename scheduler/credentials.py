"""Device credentials: each device's secret, sealed in Redis, and the broker's check against it.

One small hash per device, `ota:sched:cred:<device id>`: `kid` (the sealing key's id),
`box` (base64 of nonce || ciphertext || tag, see `scheduler.secretbox`), `on` (`1`
enabled, `0` disabled), `created_ms` and, once rotated, `rotated_ms`; `auth`, how the device
proves itself (`AUTH_METHODS`: absent means `secret`; `certificate` records have no `kid`
and `box`; `verify` and the broker's redis mode read it, docs/broker.md "Certificate devices"). A secret is returned
once, when it is set (generated, or given by the caller), and never logged or shown again.

Revocations (rotate, disable, delete) call every hook in `on_revoked` with the device id
and what happened, after Redis has the change. This is the seam through which the broker
will disconnect the device's live session; today the one hook counts revocations
(`ota_scheduler_credentials_revoked_total{action}`). A hook is awaited in the request that
revoked: it must bound its own time and retries.

Redis is the only store of credentials (no compacted topic holds them, unlike packages and
tasks): it runs with AOF, and losing it means re-importing the fleet's secrets.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from ota import device_auth
from ota.clock import now_ms
from ota.device_auth import Decision, PresentedCertificate, Reason
from ota.metrics import counter
from ota.protocol import ProtocolError, check_device_id
from scheduler import keys
from scheduler.errors import Conflict, NotFound, SchedulerError, ValidationError
from scheduler.secretbox import SecretBox, SecretBoxError

log = logging.getLogger(__name__)

# IoTDA's rule for device secrets: 8-32 letters, digits, _ and -.
SECRET = re.compile(r"[A-Za-z0-9_\-]{8,32}")
GENERATED_SECRET_BYTES = 24  # token_urlsafe: 32 characters, inside IoTDA's rule
FIELDS = ("kid", "box", "on")
# How a device may authenticate: the IoTDA HMAC of its secret, an X.509 client certificate
# from a registered device CA (scheduler/device_cas.py), or either.
AUTH_METHODS = ("secret", "certificate", "any")

REVOKED = counter(
    "scheduler",
    "credentials_revoked_total",
    "Device credentials revoked (rotated, disabled, deleted): sessions to disconnect",
    ("action",),
)

RevokeHook = Callable[[str, str], Awaitable[None]]  # (device id, "rotated"|"disabled"|"deleted")


async def count_revocation(device_id: str, action: str) -> None:
    REVOKED.labels(action).inc()


# The device broker listens here and disconnects the device's live sessions (docs/broker.md).
REVOKED_CHANNEL = f"{keys.P}cred-revoked"


def announce_revocation(r: redis.asyncio.Redis[bytes]) -> RevokeHook:
    """A hook publishing `{"device_id", "action"}` on `REVOKED_CHANNEL` (fire once: a
    broker that is down misses it, and its devices reconnect through the new check)."""

    async def hook(device_id: str, action: str) -> None:
        await r.publish(REVOKED_CHANNEL, orjson.dumps({"device_id": device_id, "action": action}))

    return hook


def record_key(device_id: str) -> str:
    # Beside the registry's keys (scheduler/keys.py): not hash-tagged, like all of them.
    return f"{keys.P}cred:{device_id}"


# Register unless present. KEYS[1] the record; ARGV kid, box, created_ms. Returns 1 or 0.
_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'kid', ARGV[1], 'box', ARGV[2], 'on', '1', 'created_ms', ARGV[3])
return 1
"""

# Register a certificate-only device unless present. KEYS[1] the record; ARGV created_ms.
_REGISTER_CERTIFICATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'on', '1', 'auth', 'certificate', 'created_ms', ARGV[1])
return 1
"""

# Set how a present record authenticates. KEYS[1] the record; ARGV[1] the method.
# Returns -1 no such record, -2 "secret"/"any" asked of a record without a secret,
# 0 already so, 1 changed.
_SET_AUTH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[1] ~= 'certificate' and redis.call('HEXISTS', KEYS[1], 'box') == 0 then return -2 end
local was = redis.call('HGET', KEYS[1], 'auth') or 'secret'
if was == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'auth', ARGV[1])
return 1
"""

# Replace the secret of a present record. KEYS[1] the record; ARGV kid, box, rotated_ms.
_ROTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'kid', ARGV[1], 'box', ARGV[2], 'rotated_ms', ARGV[3])
return 1
"""

# Set the enabled flag. KEYS[1] the record; ARGV[1] '1' or '0'.
# Returns -1 no such record, 0 already so, 1 changed.
_SET_ENABLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'on') == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'on', ARGV[1])
return 1
"""

# Register many, each only if absent, in order (a device twice in one batch: the first
# wins). No KEYS: records are named from ARGV[1], the record key prefix, as the registry's
# scripts name their index keys. ARGV[2] created_ms, ARGV[3] a JSON array of
# [device id, kid, box]. Returns one 1 (stored) or 0 (already registered) per entry.
_IMPORT = """
local out = {}
for i, e in ipairs(cjson.decode(ARGV[3])) do
  local k = ARGV[1] .. e[1]
  if redis.call('EXISTS', k) == 1 then
    out[i] = 0
  else
    redis.call('HSET', k, 'kid', e[2], 'box', e[3], 'on', '1', 'created_ms', ARGV[2])
    out[i] = 1
  end
end
return out
"""


class CredentialUnreadable(SchedulerError):  # noqa: N818 - names what is wrong
    """A stored secret cannot be opened: its key was removed from the settings, or the
    record was altered. The platform's fault, not the device's: 500, logged."""

    status = 500
    code = "credential_unreadable"


def check_secret(secret: Any, field: str = "secret") -> str:
    if not isinstance(secret, str):
        raise ValidationError(f"{field} must be a string", code="wrong_type", field=field)
    if not SECRET.fullmatch(secret):
        # The message never repeats the secret: it may be a real one with a typo.
        raise ValidationError(
            f"{field} must be 8-32 of letters, digits, _ and - (IoTDA's rule)",
            code="bad_secret",
            field=field,
        )
    return secret


def check_auth(method: Any, field: str = "auth") -> str:
    if method not in AUTH_METHODS:
        raise ValidationError(
            f"{field} must be one of {', '.join(AUTH_METHODS)}", code="bad_auth", field=field
        )
    return str(method)


def check_device(device_id: str, field: str = "device_id") -> str:
    try:
        return check_device_id(device_id)
    except ProtocolError as exc:
        raise ValidationError(exc.message, code="bad_device_id", field=field) from None


def generate_secret() -> str:
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


@dataclass(frozen=True, slots=True)
class ImportEntry:
    line: int
    device_id: str  # checked
    secret: str | None  # checked; None: generate one


class Credentials:
    def __init__(
        self, r: redis.asyncio.Redis[bytes], box: SecretBox, on_revoked: list[RevokeHook]
    ) -> None:
        self._r, self._box = r, box
        # The caller's list, not a copy: hooks added after start are called too.
        self.on_revoked = on_revoked
        self._register = r.register_script(_REGISTER)
        self._rotate = r.register_script(_ROTATE)
        self._set_enabled = r.register_script(_SET_ENABLED)
        self._register_certificate = r.register_script(_REGISTER_CERTIFICATE)
        self._set_auth = r.register_script(_SET_AUTH)
        self._import = r.register_script(_IMPORT)

    def _seal(self, device_id: str, secret: str) -> tuple[str, str]:
        kid, sealed = self._box.seal(device_id, secret)
        return kid, base64.b64encode(sealed).decode()

    async def _revoked(self, device_id: str, action: str) -> None:
        log.info("credentials of %s %s", device_id, action)
        for hook in self.on_revoked:
            await hook(device_id, action)

    # ------------------------------------------------------------ operator actions

    async def register(self, device_id: str, secret: str | None) -> tuple[dict[str, Any], str]:
        """Store a device's secret (generated when None): (status, the secret)."""
        secret = generate_secret() if secret is None else secret
        kid, box = self._seal(device_id, secret)
        if not await self._register(keys=[record_key(device_id)], args=[kid, box, now_ms()]):
            raise Conflict(
                f"device {device_id!r} already has credentials; rotate them instead",
                code="credentials_exist",
            )
        log.info("credentials of %s registered", device_id)
        return await self.status(device_id), secret

    async def register_certificate(self, device_id: str) -> dict[str, Any]:
        """Register a device that authenticates with a client certificate only: no secret."""
        if not await self._register_certificate(keys=[record_key(device_id)], args=[now_ms()]):
            raise Conflict(
                f"device {device_id!r} already has credentials; set its auth method instead",
                code="credentials_exist",
            )
        log.info("credentials of %s registered for certificates", device_id)
        return await self.status(device_id)

    async def set_auth(self, device_id: str, method: str) -> dict[str, Any]:
        """Choose how the device authenticates (`AUTH_METHODS`); a change disconnects its
        live sessions (revocation "rotated"), so each reconnects under the new rule."""
        changed = await self._set_auth(keys=[record_key(device_id)], args=[method])
        if changed == -1:
            raise self._unknown(device_id)
        if changed == -2:
            raise Conflict(
                f"device {device_id!r} has no secret; rotate one in before accepting secrets",
                code="no_secret",
            )
        if changed == 1:
            await self._revoked(device_id, "rotated")
        return await self.status(device_id)

    async def rotate(self, device_id: str, secret: str | None) -> tuple[dict[str, Any], str]:
        """Replace a device's secret (generated when None); the old one stops working."""
        secret = generate_secret() if secret is None else secret
        kid, box = self._seal(device_id, secret)
        if not await self._rotate(keys=[record_key(device_id)], args=[kid, box, now_ms()]):
            raise self._unknown(device_id)
        await self._revoked(device_id, "rotated")
        return await self.status(device_id), secret

    async def set_enabled(self, device_id: str, enabled: bool) -> dict[str, Any]:
        changed = await self._set_enabled(
            keys=[record_key(device_id)], args=["1" if enabled else "0"]
        )
        if changed == -1:
            raise self._unknown(device_id)
        if changed == 1 and not enabled:
            await self._revoked(device_id, "disabled")
        elif changed == 1:
            log.info("credentials of %s enabled", device_id)
        return await self.status(device_id)

    async def delete(self, device_id: str) -> None:
        if not await self._r.delete(record_key(device_id)):
            raise self._unknown(device_id)
        await self._revoked(device_id, "deleted")

    async def status(self, device_id: str) -> dict[str, Any]:
        kid, on, created, rotated, auth = await self._r.hmget(
            record_key(device_id), ("kid", "on", "created_ms", "rotated_ms", "auth")
        )
        if kid is None and on is None:
            raise self._unknown(device_id)
        return {
            "device_id": device_id,
            "enabled": on == b"1",
            "auth": auth.decode() if auth else "secret",
            "key_id": kid.decode() if kid else None,
            "created_ms": int(created or 0),
            "rotated_ms": int(rotated) if rotated else None,
        }

    async def import_batch(self, entries: Sequence[ImportEntry]) -> list[str | None]:
        """Register a batch in one script call: per entry the secret stored (generated or
        given), or None when the device already had credentials (nothing changed)."""
        chosen = [generate_secret() if e.secret is None else e.secret for e in entries]
        batch = []
        for entry, secret in zip(entries, chosen, strict=True):
            kid, box = self._seal(entry.device_id, secret)
            batch.append((entry.device_id, kid, box))
        stored = await self._import(args=[record_key(""), now_ms(), orjson.dumps(batch)])
        return [s if ok else None for s, ok in zip(chosen, stored, strict=True)]

    @staticmethod
    def _unknown(device_id: str) -> NotFound:
        return NotFound(f"device {device_id!r} has no credentials", code="unknown_credentials")

    # ------------------------------------------------------------ the broker's check

    async def verify(
        self,
        client_id: str,
        username: str,
        password: str,
        now: int,
        certificate: PresentedCertificate | None = None,
    ) -> Decision:
        """Decide a device's connection at `now` (epoch ms): one Redis round trip at most.
        `certificate`: the client certificate the broker reports, None without one. A record
        taking certificates (`auth` "certificate", or "any" with one presented) is decided
        by it alone, as the broker's redis mode does; any other ignores it."""
        parsed = device_auth.screen(client_id, username, now)
        if isinstance(parsed, Decision):
            return parsed
        device_id = parsed.device_id
        try:
            check_device_id(device_id)
        except ProtocolError:
            # No such id can be registered: answer without asking Redis.
            return Decision(Reason.UNKNOWN_DEVICE, device_id)
        kid, box, on, auth = await self._r.hmget(record_key(device_id), (*FIELDS, "auth"))
        exists = on is not None or kid is not None
        if exists and (auth == b"certificate" or (auth == b"any" and certificate is not None)):
            # Passwords never open a certificate-only device, whatever secret it still holds.
            return device_auth.decide_certificate(device_id, certificate, on == b"1")
        secret: str | None = None
        if kid is not None and box is not None:
            try:
                secret = self._box.open(device_id, kid.decode(), base64.b64decode(box))
            except SecretBoxError as exc:
                log.error("cannot open the credentials of %s: %s", device_id, exc)
                raise CredentialUnreadable(str(exc)) from None
        return device_auth.decide(parsed, password, secret, on == b"1")
