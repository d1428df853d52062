"""Device CAs: the operator's certificate authorities whose client certificates the broker
accepts from certificate devices (X.509 device authentication, as IoTDA offers).

One Redis hash beside the device credentials (the credential store), `ota:sched:device-cas`:
field = lowercase hex SHA-256 of the CA certificate's DER (its fingerprint), value = the PEM.
The broker (redis mode) reads the whole hash every few seconds, keeps it as the device TLS
listener's truststore and checks each presented chain against it (docs/broker.md).

A CA is accepted when it is exactly one X.509 certificate, may sign (basic constraints
cA true) and is valid now. Its private key never comes here. Removing a CA refuses new
connections with its certificates from the broker's next refresh; devices already connected
stay until they reconnect (disable or delete them to disconnect them now).

Each CA is recorded on the credentials topic beside the device records, key `ca/<fingerprint>`
(a device id never holds `/`), value the PEM, a removal a tombstone, and put back from it
into an emptied store (scheduler/credential_log.py). The record goes first: a CA the store
has is always on the topic, and a removal's tombstone is there before the CA leaves the
store (which remembers the removal for an hour, so a restore beside it does not undo it).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from scheduler.credentials import DELETED_TTL_S, STORE_P, deleted_key
from scheduler.errors import Conflict, NotFound, ValidationError

log = logging.getLogger(__name__)

DEVICE_CAS = f"{STORE_P}device-cas"
MAX_PEM_BYTES = 64 * 1024
MAX_CAS = 100  # a fleet has a few; the broker reads them all on every refresh
TOPIC_PREFIX = "ca/"  # a CA's key on the credentials topic: `ca/<fingerprint>`
# Records a CA on the credentials topic: (topic key, PEM or None for a removal); raises
# KafkaError when Kafka does not take it (the change is then not made).
Recorder = Callable[[str, bytes | None], Awaitable[None]]


def parse_ca(pem: bytes, now: dt.datetime) -> x509.Certificate:
    """The one CA certificate in `pem`, or a ValidationError naming what is wrong."""
    if len(pem) > MAX_PEM_BYTES:
        raise ValidationError(
            f"a CA certificate is at most {MAX_PEM_BYTES} bytes", code="too_large"
        )
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValidationError(
            "body is not a PEM certificate (-----BEGIN CERTIFICATE-----)", code="bad_certificate"
        ) from None
    if len(certs) != 1:
        raise ValidationError(
            f"give exactly one CA certificate, not {len(certs)}", code="bad_certificate"
        )
    cert = certs[0]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValidationError(
            "not a CA certificate (basic constraints without cA)", code="not_a_ca"
        )
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValidationError(
            f"the CA is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d})",
            code="ca_not_valid_now",
        )
    return cert


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def describe(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint(cert),
        "subject": cert.subject.rfc4514_string(),
        "not_before_ms": int(cert.not_valid_before_utc.timestamp() * 1000),
        "not_after_ms": int(cert.not_valid_after_utc.timestamp() * 1000),
    }


def check_fingerprint(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValidationError(
            "fingerprint must be 64 lowercase hex digits (SHA-256 of the certificate)",
            code="bad_fingerprint",
            field="fingerprint",
        )
    return value


class DeviceCas:
    def __init__(self, r: redis.asyncio.Redis[bytes], recorder: Recorder | None = None) -> None:
        """`recorder`: None for tools and tests writing a store that no topic records."""
        self._r, self._recorder = r, recorder

    async def add(self, pem: bytes) -> dict[str, Any]:
        cert = parse_ca(pem, dt.datetime.now(dt.UTC))
        print_ = fingerprint(cert)
        if await self._r.hlen(DEVICE_CAS) >= MAX_CAS:
            raise Conflict(f"at most {MAX_CAS} device CAs", code="too_many_cas")
        stored = cert.public_bytes(serialization.Encoding.PEM)
        if await self._r.hexists(DEVICE_CAS, print_):
            raise Conflict(f"device CA {print_} is already registered", code="ca_exists")
        if self._recorder is not None:
            await self._recorder(TOPIC_PREFIX + print_, stored)
        if not await self._r.hsetnx(DEVICE_CAS, print_, stored):
            raise Conflict(f"device CA {print_} is already registered", code="ca_exists")
        log.info("device CA %s registered (%s)", print_, cert.subject.rfc4514_string())
        return describe(cert)

    async def list(self) -> list[dict[str, Any]]:
        entries = await self._r.hgetall(DEVICE_CAS)
        out = []
        for _field, pem in sorted(entries.items()):
            out.append(describe(x509.load_pem_x509_certificate(pem)))
        return out

    async def delete(self, print_: str) -> None:
        print_ = check_fingerprint(print_)
        if not await self._r.hexists(DEVICE_CAS, print_):
            raise NotFound(f"no device CA {print_}", code="unknown_ca")
        if self._recorder is not None:
            await self._recorder(TOPIC_PREFIX + print_, None)
        pipe = self._r.pipeline(transaction=True)
        pipe.set(deleted_key(TOPIC_PREFIX + print_), "1", ex=DELETED_TTL_S)
        pipe.hdel(DEVICE_CAS, print_)
        if not (await pipe.execute())[1]:
            raise NotFound(f"no device CA {print_}", code="unknown_ca")
        log.info("device CA %s removed", print_)
