"""Device credentials: each device's secret, sealed in Redis, and the broker's check against it.

One small hash per device, `ota:sched:cred:<device id>`: `kid` (the sealing key's id),
`box` (base64 of nonce || ciphertext || tag, see `scheduler.secretbox`), `on` (`1`
enabled, `0` disabled), `created_ms` and, once rotated, `rotated_ms`; `auth`, how the device
proves itself (`AUTH_METHODS`: absent means `secret`; `certificate` records have no `kid`
and `box`; `verify` and the broker's redis mode read it, docs/broker.md "Certificate devices"). A secret is returned
once, when it is set (generated, or given by the caller), and never logged or shown again.

Revocations (rotate, disable, delete, a change of `auth`) call every hook in `on_revoked`
with the device id and what happened, after Redis has the change. This is the seam through
which the broker will disconnect the device's live session; today the one hook counts
revocations (`ota_scheduler_credentials_revoked_total{action}`). A hook is awaited in the
request that revoked: it must bound its own time and retries.

Every change is also recorded on the compacted topic `ota.credentials`, the records as
they stand (secrets sealed), from which an emptied store is put back
(scheduler/credential_log.py): each script stamps the record with a sequence number and
lists the device as pending, and the recorder sends it after the revocation hooks.
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
# Sends the changed devices' records to the credentials topic (`CredentialLog.publish`);
# never raises for Kafka: what it could not send stays in `PENDING` for the drain.
Recorder = Callable[[Sequence[str]], Awaitable[None]]


async def count_revocation(device_id: str, action: str) -> None:
    REVOKED.labels(action).inc()


# The credential store's keys, apart from the scheduler's (scheduler/keys.py): the device
# broker reads them under this prefix (OTA_BROKER_CREDENTIAL_PREFIX and its neighbours),
# on a standalone Redis.
STORE_P = "ota:sched:"


# The device broker listens here and disconnects the device's live sessions (docs/broker.md).
REVOKED_CHANNEL = f"{STORE_P}cred-revoked"


def announce_revocation(r: redis.asyncio.Redis[bytes]) -> RevokeHook:
    """A hook publishing `{"device_id", "action"}` on `REVOKED_CHANNEL` (fire once: a
    broker that is down misses it, and its devices reconnect through the new check)."""

    async def hook(device_id: str, action: str) -> None:
        await r.publish(REVOKED_CHANNEL, orjson.dumps({"device_id": device_id, "action": action}))

    return hook


def record_key(device_id: str) -> str:
    return f"{STORE_P}cred:{device_id}"


# The record of every change on the credentials topic (scheduler/credential_log.py): each
# change stamps its record with the next `SEQ` and lists the device in `PENDING`, in the
# same script, until the record as it stands is on the topic. A deletion leaves
# `deleted_key` for `DELETED_TTL_S`, so a restore running beside it does not put it back.
SEQ = f"{STORE_P}cred-seq"
PENDING = f"{STORE_P}cred-pending"
DELETED_TTL_S = 3600


def deleted_key(device_id: str) -> str:
    return f"{STORE_P}cred-deleted:{device_id}"


# Every change script ends with `changed(record)`: KEYS[2] `SEQ`, KEYS[3] `PENDING`, and
# the device id the script's last argument.
_CHANGED = """
local function changed(record)
  redis.call('HSET', record, 'seq', redis.call('INCR', KEYS[2]))
  redis.call('SADD', KEYS[3], ARGV[#ARGV])
end
"""

# Register unless present. KEYS[1] the record; ARGV kid, box, created_ms, device. 1 or 0.
_REGISTER = (
    _CHANGED
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'kid', ARGV[1], 'box', ARGV[2], 'on', '1', 'created_ms', ARGV[3])
changed(KEYS[1])
return 1
"""
)

# Register a certificate-only device unless present. KEYS[1] the record; ARGV created_ms,
# device.
_REGISTER_CERTIFICATE = (
    _CHANGED
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'on', '1', 'auth', 'certificate', 'created_ms', ARGV[1])
changed(KEYS[1])
return 1
"""
)

# Set how a present record authenticates. KEYS[1] the record; ARGV the method, device.
# Returns -1 no such record, -2 "secret"/"any" asked of a record without a secret,
# 0 already so, 1 changed.
_SET_AUTH = (
    _CHANGED
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[1] ~= 'certificate' and redis.call('HEXISTS', KEYS[1], 'box') == 0 then return -2 end
local was = redis.call('HGET', KEYS[1], 'auth') or 'secret'
if was == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'auth', ARGV[1])
changed(KEYS[1])
return 1
"""
)

# Replace the secret of a present record. KEYS[1] the record; ARGV kid, box, rotated_ms,
# device.
_ROTATE = (
    _CHANGED
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'kid', ARGV[1], 'box', ARGV[2], 'rotated_ms', ARGV[3])
changed(KEYS[1])
return 1
"""
)

# Set the enabled flag. KEYS[1] the record; ARGV '1' or '0', device.
# Returns -1 no such record, 0 already so, 1 changed.
_SET_ENABLED = (
    _CHANGED
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'on') == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'on', ARGV[1])
changed(KEYS[1])
return 1
"""
)

# Delete a record. KEYS[1] the record, KEYS[3] `PENDING`, KEYS[4] its deleted mark;
# ARGV the mark's TTL (s), device. Returns 1 deleted, 0 no such record.
_DELETE = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[#ARGV])
return 1
"""

# Register many, each only if absent, in order (a device twice in one batch: the first
# wins). No KEYS: records are named from ARGV[1], the record key prefix, as the registry's
# scripts name their index keys. ARGV[2] created_ms, ARGV[3] a JSON array of
# [device id, kid, box], ARGV[4] `SEQ`, ARGV[5] `PENDING`. Returns one 1 (stored) or 0
# (already registered) per entry.
_IMPORT = """
local out = {}
for i, e in ipairs(cjson.decode(ARGV[3])) do
  local k = ARGV[1] .. e[1]
  if redis.call('EXISTS', k) == 1 then
    out[i] = 0
  else
    redis.call('HSET', k, 'kid', e[2], 'box', e[3], 'on', '1', 'created_ms', ARGV[2],
               'seq', redis.call('INCR', ARGV[4]))
    redis.call('SADD', ARGV[5], e[1])
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
        self,
        r: redis.asyncio.Redis[bytes],
        box: SecretBox,
        on_revoked: list[RevokeHook],
        recorder: Recorder | None = None,
    ) -> None:
        """`recorder`: None leaves every change to a running scheduler's drain (tools that
        write the store without one)."""
        self._r, self._box, self._recorder = r, box, recorder
        # The caller's list, not a copy: hooks added after start are called too.
        self.on_revoked = on_revoked
        self._register = r.register_script(_REGISTER)
        self._rotate = r.register_script(_ROTATE)
        self._set_enabled = r.register_script(_SET_ENABLED)
        self._register_certificate = r.register_script(_REGISTER_CERTIFICATE)
        self._set_auth = r.register_script(_SET_AUTH)
        self._import = r.register_script(_IMPORT)
        self._delete = r.register_script(_DELETE)

    def _seal(self, device_id: str, secret: str) -> tuple[str, str]:
        kid, sealed = self._box.seal(device_id, secret)
        return kid, base64.b64encode(sealed).decode()

    @staticmethod
    def _keys(device_id: str) -> list[str]:
        return [record_key(device_id), SEQ, PENDING, deleted_key(device_id)]

    async def _recorded(self, device_ids: Sequence[str]) -> None:
        if self._recorder is not None and device_ids:
            await self._recorder(device_ids)

    async def _revoked(self, device_id: str, action: str) -> None:
        log.info("credentials of %s %s", device_id, action)
        for hook in self.on_revoked:
            await hook(device_id, action)

    # ------------------------------------------------------------ operator actions

    async def register(self, device_id: str, secret: str | None) -> tuple[dict[str, Any], str]:
        """Store a device's secret (generated when None): (status, the secret)."""
        secret = generate_secret() if secret is None else secret
        kid, box = self._seal(device_id, secret)
        if not await self._register(
            keys=self._keys(device_id), args=[kid, box, now_ms(), device_id]
        ):
            raise Conflict(
                f"device {device_id!r} already has credentials; rotate them instead",
                code="credentials_exist",
            )
        await self._recorded([device_id])
        log.info("credentials of %s registered", device_id)
        return await self.status(device_id), secret

    async def register_certificate(self, device_id: str) -> dict[str, Any]:
        """Register a device that authenticates with a client certificate only: no secret."""
        if not await self._register_certificate(
            keys=self._keys(device_id), args=[now_ms(), device_id]
        ):
            raise Conflict(
                f"device {device_id!r} already has credentials; set its auth method instead",
                code="credentials_exist",
            )
        await self._recorded([device_id])
        log.info("credentials of %s registered for certificates", device_id)
        return await self.status(device_id)

    async def set_auth(self, device_id: str, method: str) -> dict[str, Any]:
        """Choose how the device authenticates (`AUTH_METHODS`); a change disconnects its
        live sessions (revocation "rotated"), so each reconnects under the new rule."""
        changed = await self._set_auth(keys=self._keys(device_id), args=[method, device_id])
        if changed == -1:
            raise self._unknown(device_id)
        if changed == -2:
            raise Conflict(
                f"device {device_id!r} has no secret; rotate one in before accepting secrets",
                code="no_secret",
            )
        if changed == 1:
            await self._revoked(device_id, "rotated")
            await self._recorded([device_id])
        return await self.status(device_id)

    async def rotate(self, device_id: str, secret: str | None) -> tuple[dict[str, Any], str]:
        """Replace a device's secret (generated when None); the old one stops working."""
        secret = generate_secret() if secret is None else secret
        kid, box = self._seal(device_id, secret)
        if not await self._rotate(keys=self._keys(device_id), args=[kid, box, now_ms(), device_id]):
            raise self._unknown(device_id)
        await self._revoked(device_id, "rotated")
        await self._recorded([device_id])
        return await self.status(device_id), secret

    async def set_enabled(self, device_id: str, enabled: bool) -> dict[str, Any]:
        changed = await self._set_enabled(
            keys=self._keys(device_id), args=["1" if enabled else "0", device_id]
        )
        if changed == -1:
            raise self._unknown(device_id)
        if changed == 1 and not enabled:
            await self._revoked(device_id, "disabled")
        elif changed == 1:
            log.info("credentials of %s enabled", device_id)
        if changed == 1:
            await self._recorded([device_id])
        return await self.status(device_id)

    async def delete(self, device_id: str) -> None:
        if not await self._delete(keys=self._keys(device_id), args=[DELETED_TTL_S, device_id]):
            raise self._unknown(device_id)
        await self._revoked(device_id, "deleted")
        await self._recorded([device_id])

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
        stored = await self._import(
            args=[record_key(""), now_ms(), orjson.dumps(batch), SEQ, PENDING]
        )
        await self._recorded([e.device_id for e, ok in zip(entries, stored, strict=True) if ok])
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
