"""The broker's authentication request (`POST /v1/broker/authenticate`), parsed.

What may live here: pure parsing of the request body; a bad field is a `ValidationError`
naming it (422), and nothing is looked up.

The body is EMQX's HTTP-authentication shape: `clientid`, `username`, `password` (each
required; null when the device sent none) and `peerhost` (for the log). When the device
presented a client certificate in the TLS handshake, the broker adds what it knows of it:

| field | what |
|---|---|
| `cert_common_name` | the subject's CN (EMQX's `${cert_common_name}`) |
| `cert_subject` | the subject, RFC 2253 (EMQX's `${cert_subject}`) |
| `cert_names` | every CN and DNS, e-mail and URI SAN: the names matched against the device id. The project's broker sends it; EMQX has no placeholder for SANs, so without it the names are the common name alone |
| `cert_fingerprint` | SHA-256 of the leaf's DER, for the log |
| `cert_check` | the broker's verdict on the chain it holds: `ok`, `certificate_untrusted` or `certificate_expired`; absent means `ok` (EMQX passes a certificate only when its listener verified the chain) |

Absent, null or empty certificate fields mean no certificate. These are the broker's facts,
trusted as far as the caller is: only a key with the broker scope reaches this endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ota.device_auth import CHAIN_VERDICTS, PresentedCertificate, Reason
from scheduler.errors import ValidationError

REQUIRED = ("clientid", "username", "password")
CERTIFICATE_FIELDS = (
    "cert_common_name",
    "cert_subject",
    "cert_names",
    "cert_fingerprint",
    "cert_check",
)
_VERDICTS = {reason.value: reason for reason in CHAIN_VERDICTS}


@dataclass(frozen=True, slots=True)
class AuthRequest:
    client_id: str
    username: str
    password: str
    peerhost: str
    certificate: PresentedCertificate | None


def parse(body: Any) -> AuthRequest:
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object", code="wrong_type")
    for name in REQUIRED:
        if name not in body:
            raise ValidationError(f"{name} is required", code="missing_field", field=name)
    return AuthRequest(
        # null: a device that sent no user name or password
        _text(body, "clientid"),
        _text(body, "username"),
        _text(body, "password"),
        str(body.get("peerhost") or ""),
        _certificate(body),
    )


def _certificate(body: dict[str, Any]) -> PresentedCertificate | None:
    common_name = _text(body, "cert_common_name")
    subject = _text(body, "cert_subject")
    listed = body.get("cert_names")
    if listed is not None and not (
        isinstance(listed, list) and all(isinstance(name, str) for name in listed)
    ):
        raise ValidationError(
            "cert_names must be a list of strings", code="wrong_type", field="cert_names"
        )
    names: tuple[str, ...] = tuple(listed) if listed else ((common_name,) if common_name else ())
    verdict = _text(body, "cert_check")
    if verdict and verdict not in _VERDICTS:
        raise ValidationError(
            f"cert_check must be one of {', '.join(_VERDICTS)}",
            code="bad_cert_check",
            field="cert_check",
        )
    if not (names or subject):
        return None  # a verdict or fingerprint alone names no certificate
    return PresentedCertificate(
        names, _VERDICTS.get(verdict, Reason.OK), _text(body, "cert_fingerprint")
    )


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", code="wrong_type", field=name)
    return value
