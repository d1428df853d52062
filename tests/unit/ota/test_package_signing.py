"""Package signatures as devices check them: key ids, PEM bundles (key rotation), the
two algorithms, and every reason a device refuses a package."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ota.package_signing import (
    KEY_ID,
    KeyFileError,
    key_id,
    load_public_keys,
    refusal,
    verifies,
)
from ota.records import JobSpec, JobStartRecord, PackageRef, TaskType, decode_inbox, encode

CONTENT = b"firmware 2.0" * 100
SHA = hashlib.sha256(CONTENT).hexdigest()


def pem(
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """What an operator makes: Ed25519 over the digest, ECDSA-SHA256 over the file."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.sign(bytes.fromhex(SHA))
    else:
        raw = private.sign(CONTENT, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode()


OLD = ed25519.Ed25519PrivateKey.generate()
NEW = ec.generate_private_key(ec.SECP256R1())
OTHER = ed25519.Ed25519PrivateKey.generate()


def kid(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key_id(private.public_key())


def test_a_key_id_is_16_hex_of_the_sha256_of_its_der() -> None:
    der = OLD.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert kid(OLD) == hashlib.sha256(der).hexdigest()[:16]
    assert KEY_ID.fullmatch(kid(OLD))
    assert len({kid(OLD), kid(NEW), kid(OTHER)}) == 3


def test_a_bundle_holds_the_old_and_the_new_key_by_id() -> None:
    keys = load_public_keys(pem(OLD) + b"\n# rotated 2026-12\n" + pem(NEW))
    assert set(keys) == {kid(OLD), kid(NEW)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no PUBLIC KEY block"),
        (pem(ec.generate_private_key(ec.SECP384R1())), "neither Ed25519 nor ECDSA P-256"),
        (pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "neither"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "unreadable"),
    ],
    ids=["empty", "p384", "rsa", "garbage"],
)
def test_unusable_key_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        load_public_keys(data)


@pytest.mark.parametrize("private", [OLD, NEW], ids=["ed25519", "ecdsa-p256"])
def test_both_algorithms_verify_from_the_digest(
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
) -> None:
    raw = base64.b64decode(sign(private))
    assert verifies(private.public_key(), raw, SHA)
    assert not verifies(private.public_key(), raw, hashlib.sha256(b"other").hexdigest())


TRUSTED = load_public_keys(pem(OLD) + pem(NEW))


def test_a_device_that_trusts_no_key_checks_nothing() -> None:
    assert refusal({}, None, None, SHA) is None


@pytest.mark.parametrize("private", [OLD, NEW], ids=["old-key", "new-key"])
def test_during_a_rotation_either_key_is_accepted(
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
) -> None:
    assert refusal(TRUSTED, sign(private), kid(private), SHA) is None


@pytest.mark.parametrize(
    ("signature", "signer", "sha", "reason"),
    [
        (None, None, SHA, "not signed"),
        (sign(OLD), None, SHA, "not signed"),
        (sign(OTHER), kid(OTHER), SHA, "does not trust"),
        (sign(OTHER), kid(OLD), SHA, "does not verify"),  # another key, a trusted key's id
        (sign(OLD), kid(NEW), SHA, "does not verify"),  # the trusted keys swapped
        (sign(OLD), kid(OLD), hashlib.sha256(b"tampered").hexdigest(), "does not verify"),
        ("not base64!", kid(OLD), SHA, "does not verify"),
        (base64.b64encode(b"x" * 300).decode(), kid(OLD), SHA, "does not verify"),
    ],
    ids=[
        "unsigned",
        "no-key-id",
        "untrusted-key",
        "forged",
        "wrong-trusted-key",
        "other-package",
        "not-base64",
        "too-long",
    ],
)
def test_a_device_that_trusts_keys_refuses(
    signature: str | None, signer: str | None, sha: str, reason: str
) -> None:
    refused = refusal(TRUSTED, signature, signer, sha)
    assert refused is not None
    assert reason in refused


def test_a_job_start_record_carries_the_signature_to_the_workers() -> None:
    package = PackageRef(SHA, "2.0", "fw.bin", len(CONTENT), signature=sign(OLD), key_id=kid(OLD))
    record = JobStartRecord("dev-1", JobSpec("t1", TaskType.FIRMWARE, package))
    decoded = decode_inbox(encode(record))
    assert isinstance(decoded, JobStartRecord)
    assert decoded.job.package == package
    unsigned = JobStartRecord(
        "dev-1", JobSpec("t1", TaskType.FIRMWARE, PackageRef(SHA, "2", "f", 1))
    )
    assert decode_inbox(encode(unsigned)) == unsigned
