"""Device CAs and client certificates for tests (X.509 device authentication).

`make_ca` makes a CA (optionally under another one, as an intermediate), `issue` a device
certificate naming a device id in its CN and/or SANs. EC P-256 throughout, as the local
stack's CA (deploy/local/make_certs.py). `write_device` puts a certificate chain and its key
where a TLS client can load them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
FAR_AHEAD = dt.datetime(2120, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # intermediates above `cert`, not the root

    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def chain_pem(self) -> str:
        """The certificate, then its intermediates: what a device presents."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for c in (self.cert, *self.chain)
        )

    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(name: str, parent: Issued | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = _name(name) if parent is None else parent.cert.subject
    signer = key if parent is None else parent.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(LONG_AGO)
        .not_valid_after(FAR_AHEAD)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    chain = () if parent is None else (parent.cert, *parent.chain)
    cert = builder.sign(signer, hashes.SHA256())
    # An intermediate's chain, as a device presents it, leaves the root out.
    return Issued(cert, key, chain[:-1] if chain else ())


def issue(
    ca: Issued,
    cn: str,
    sans: tuple[str, ...] = (),
    *,
    not_before: dt.datetime = LONG_AGO,
    not_after: dt.datetime = FAR_AHEAD,
    client_auth: bool = True,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client_auth else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    chain = (ca.cert, *ca.chain) if ca.cert.issuer != ca.cert.subject else ()
    return Issued(builder.sign(ca.key, hashes.SHA256()), key, chain)


def write_device(issued: Issued, folder: Path, name: str) -> tuple[Path, Path]:
    """(chain file, key file) for `ssl.SSLContext.load_cert_chain`."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_text(issued.chain_pem())
    key_file.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file
