"""Make (once) the local CA and the device broker's TLS server certificate.

Writes into --dir (default .state/tls), leaving files that are already there and valid:
  ca.pem, ca.key         the local CA (devices verify the broker with ca.pem)
  server.pem, server.key the broker's certificate for localhost, broker (compose's host
                         name for it), 127.0.0.1 and ::1
  server.p12             the same key and chain as a PKCS12 keystore, for HiveMQ
  server.p12.pass        the keystore's password (random, mode 600)
  edge.pem, edge.key     the download edge's HTTPS certificate for the same names (devices
                         verify downloads with ca.pem too)
Private keys and the password are mode 600. A server or edge certificate within 30 days of
expiry, or not signed by the CA in the folder, is made again (the CA is kept).

Usage: .venv/bin/python deploy/local/make_certs.py --dir .state/tls
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest that clients following the CA/Browser rules accept
RENEW_BEFORE = dt.timedelta(days=30)
# "broker": the compose service the gateway reaches the platform listener by (over TLS).
SERVER_NAMES = ("localhost", "broker")
SERVER_IPS = ("127.0.0.1", "::1")
SERVER_EXTRAS = ("server.p12", "server.p12.pass")  # the broker's keystore beside its PEM files


def _write(path: Path, data: bytes, private: bool) -> None:
    """Writes atomically (a reader never sees half a file), 600 for secrets."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ota-rollout local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _make_ca(folder: Path, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("ota-rollout local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(folder / "ca.key", _pem_key(key), private=True)
    _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    except (OSError, ValueError):
        return None
    return (cert, key) if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _leaf_still_good(
    folder: Path, stem: str, others: tuple[str, ...], ca: x509.Certificate, now: dt.datetime
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((folder / f"{stem}.pem").read_bytes())
        present = all((folder / name).is_file() for name in (f"{stem}.key", *others))
        ca_key = ca.public_key()
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except (OSError, ValueError, InvalidSignature):
        return False
    return present and cert.not_valid_after_utc - now > RENEW_BEFORE


def _make_leaf(
    folder: Path,
    stem: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for SERVER_NAMES and SERVER_IPS: `<stem>.pem`, `<stem>.key`."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / f"{stem}.key", _pem_key(key), private=True)
    _write(folder / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def _make_server(
    folder: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> None:
    """The broker's certificate, also as a PKCS12 keystore with a random password."""
    cert, key = _make_leaf(folder, "server", ca, ca_key, now)
    password = secrets.token_urlsafe(24)
    keystore = pkcs12.serialize_key_and_certificates(
        b"ota-broker",
        key,
        cert,
        [ca],
        serialization.BestAvailableEncryption(password.encode()),
    )
    _write(folder / "server.p12.pass", password.encode(), private=True)
    _write(folder / "server.p12", keystore, private=True)


def ensure(folder: Path) -> list[str]:
    """Makes what is missing; returns what was made, for the caller to report."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    made: list[str] = []
    loaded = _load_ca(folder)
    if loaded is None or loaded[0].not_valid_after_utc - now <= RENEW_BEFORE:
        loaded = _make_ca(folder, now)
        made.append("CA")
    ca, ca_key = loaded
    if made or not _leaf_still_good(folder, "server", SERVER_EXTRAS, ca, now):
        _make_server(folder, ca, ca_key, now)
        made.append("server certificate")
    if "CA" in made or not _leaf_still_good(folder, "edge", (), ca, now):
        _make_leaf(folder, "edge", ca, ca_key, now)
        made.append("edge certificate")
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".state/tls"), help="output folder")
    args = parser.parse_args()
    made = ensure(args.dir)
    print(f"made {' and '.join(made)} in {args.dir}" if made else f"kept the files in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
