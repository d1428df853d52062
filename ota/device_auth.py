"""IoTDA device authentication: the client id, user name and password a device connects with.

What may live here: parsing and checking credentials as pure functions of their inputs.
No I/O and no clock reads: the platform's time is the `now_ms` parameter and the device's
stored record (secret, enabled) is looked up by the caller and passed in.

An IoTDA device connects with
- client id `{device_id}_0_{sign_type}_{yyyyMMddHH}` (UTC hour; device ids may contain `_`,
  so the id is parsed from the right); sign_type `0` = the hour is not checked, `1` = it
  must be within one hour of the platform's clock;
- user name = the device id;
- password = lowercase hex HMAC-SHA256 with the yyyyMMddHH string as the key and the device
  secret as the message, as Huawei's SDKs compute it.

`authenticate` answers a `Decision` whose reason is one of `Reason`; the checks that need
no stored record (`screen`) come first, so a caller can skip the lookup when they fail.

X.509 devices (a record whose `auth` accepts certificates) are decided by
`decide_certificate` from the facts the broker reports about the client certificate of the
TLS handshake (`PresentedCertificate`): the broker holds the chain and checks it; this
side matches the names against the device id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

HOUR_MS = 3_600_000
# The platform accepts the device's hour, the hour before it and the hour after it.
SKEW_HOURS = 1
MAX_CLIENT_ID_CHARS = 256  # a 128-character device id plus the suffix, with room to spare


class Reason(StrEnum):
    OK = "ok"
    MALFORMED_CLIENT_ID = "malformed_client_id"
    UNKNOWN_DEVICE = "unknown_device"
    BAD_PASSWORD = "bad_password"
    DISABLED = "disabled"
    CLOCK_SKEW = "clock_skew"
    USERNAME_MISMATCH = "username_mismatch"
    # Certificate devices (scheduler/credentials.py's `auth`; docs/broker.md, "Certificate
    # devices"). Required: accepts certificates only and presented none.
    CERTIFICATE_REQUIRED = "certificate_required"
    # Neither the certificate's CN nor a SAN is the device id.
    CERTIFICATE_MISMATCH = "certificate_mismatch"
    # The broker's verdicts on the chain: not from a registered device CA (or not for client
    # authentication), and outside its validity.
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"
    CERTIFICATE_EXPIRED = "certificate_expired"


class SignType(StrEnum):
    NO_TIME_CHECK = "0"
    TIME_CHECK = "1"


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Reason
    device_id: str | None  # None only when the client id could not be parsed

    @property
    def allowed(self) -> bool:
        return self.reason is Reason.OK


@dataclass(frozen=True, slots=True)
class ClientId:
    device_id: str
    sign_type: SignType
    timestamp: str  # yyyyMMddHH, also the HMAC key
    hour: int  # hours since the epoch (UTC)


@dataclass(frozen=True, slots=True)
class Credentials:
    client_id: str
    username: str
    password: str


# What the broker may say of a chain it checked (its request's `cert_check`).
CHAIN_VERDICTS = (Reason.OK, Reason.CERTIFICATE_UNTRUSTED, Reason.CERTIFICATE_EXPIRED)


@dataclass(frozen=True, slots=True)
class PresentedCertificate:
    """The client certificate a device presented, as the broker reports it."""

    names: tuple[str, ...]  # its CNs and DNS, e-mail and URI SANs: the device id must be one
    chain: Reason = Reason.OK  # the broker's verdict on the chain, one of CHAIN_VERDICTS
    fingerprint: str = ""  # SHA-256 of the leaf, for the log; "" when the broker sent none


class MalformedClientId(ValueError):  # noqa: N818 - names what is wrong, as httpx does
    """The client id is not `{device_id}_0_{0|1}_{yyyyMMddHH}`."""


def parse_client_id(client_id: str) -> ClientId:
    if len(client_id) > MAX_CLIENT_ID_CHARS:
        raise MalformedClientId(f"client id is over {MAX_CLIENT_ID_CHARS} characters")
    parts = client_id.rsplit("_", 3)
    if len(parts) != 4 or not parts[0] or parts[1] != "0":
        raise MalformedClientId("client id is not {device_id}_0_{sign_type}_{yyyyMMddHH}")
    device_id, _, sign, stamp = parts
    try:
        sign_type = SignType(sign)
    except ValueError:
        raise MalformedClientId(f"sign type {sign[:10]!r} is not 0 or 1") from None
    return ClientId(device_id, sign_type, stamp, epoch_hour(stamp))


def epoch_hour(stamp: str) -> int:
    """Hours since the epoch of a yyyyMMddHH string (UTC); `MalformedClientId` if not one."""
    if len(stamp) != 10 or not (stamp.isascii() and stamp.isdigit()):
        raise MalformedClientId(f"timestamp {stamp[:12]!r} is not yyyyMMddHH")
    try:
        at = dt.datetime(
            int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[8:]), tzinfo=dt.UTC
        )
    except ValueError:
        raise MalformedClientId(f"timestamp {stamp!r} is not a valid UTC hour") from None
    return int(at.timestamp()) // 3600


def timestamp_for(now_ms: int) -> str:
    """The yyyyMMddHH (UTC) of a time, as a device stamps its client id."""
    return dt.datetime.fromtimestamp(now_ms // 1000, tz=dt.UTC).strftime("%Y%m%d%H")


def password_for(secret: str, timestamp: str) -> str:
    return hmac.new(timestamp.encode(), secret.encode(), hashlib.sha256).hexdigest()


def credentials_for(
    device_id: str, secret: str, now_ms: int, sign_type: SignType = SignType.TIME_CHECK
) -> Credentials:
    """What a device sends at `now_ms` (the SDK's default sign type checks the hour)."""
    stamp = timestamp_for(now_ms)
    return Credentials(
        f"{device_id}_0_{sign_type.value}_{stamp}", device_id, password_for(secret, stamp)
    )


def screen(client_id: str, username: str, now_ms: int) -> ClientId | Decision:
    """The checks that need no stored record: the parsed client id, or a denial."""
    try:
        parsed = parse_client_id(client_id)
    except MalformedClientId:
        return Decision(Reason.MALFORMED_CLIENT_ID, None)
    if username != parsed.device_id:
        return Decision(Reason.USERNAME_MISMATCH, parsed.device_id)
    if (
        parsed.sign_type is SignType.TIME_CHECK
        and abs(parsed.hour - now_ms // HOUR_MS) > SKEW_HOURS
    ):
        return Decision(Reason.CLOCK_SKEW, parsed.device_id)
    return parsed


def decide(parsed: ClientId, password: str, secret: str | None, enabled: bool) -> Decision:
    """The checks against the stored record (`secret` None: no such device)."""
    if secret is None:
        return Decision(Reason.UNKNOWN_DEVICE, parsed.device_id)
    if not enabled:
        return Decision(Reason.DISABLED, parsed.device_id)
    expected = password_for(secret, parsed.timestamp)
    # compare_digest takes str only when both are ASCII; anything else cannot match anyway.
    if not (password.isascii() and hmac.compare_digest(expected, password)):
        return Decision(Reason.BAD_PASSWORD, parsed.device_id)
    return Decision(Reason.OK, parsed.device_id)


def authenticate(
    client_id: str,
    username: str,
    password: str,
    secret: str | None,
    enabled: bool,
    now_ms: int,
) -> Decision:
    """Both steps, for a caller that already holds the device's record."""
    parsed = screen(client_id, username, now_ms)
    if isinstance(parsed, Decision):
        return parsed
    return decide(parsed, password, secret, enabled)


def decide_certificate(
    device_id: str, certificate: PresentedCertificate | None, enabled: bool
) -> Decision:
    """A device whose record takes a certificate (`auth` "certificate", or "any" with one
    presented), as the broker's redis mode decides it: disabled first, then a certificate
    is required, the broker's verdict on its chain stands, and it must name the device."""
    if not enabled:
        return Decision(Reason.DISABLED, device_id)
    if certificate is None:
        return Decision(Reason.CERTIFICATE_REQUIRED, device_id)
    if certificate.chain is not Reason.OK:
        return Decision(certificate.chain, device_id)
    if device_id not in certificate.names:
        return Decision(Reason.CERTIFICATE_MISMATCH, device_id)
    return Decision(Reason.OK, device_id)
