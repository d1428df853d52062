"""A signed package's signature and key id travel with the task's job starts, so the
workers can put them in the upgrade command; with two keys configured (a rotation), a
package signed with either is accepted and names the key that verified it, which
`ota packages list` shows."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ota.package_signing import key_id
from tests.integration.scheduler.conftest import StartHarness
from tests.integration.scheduler.test_sched_cli import ota


async def test_job_starts_carry_the_signature_and_the_verifying_key(
    start_harness: StartHarness, tmp_path: Path
) -> None:
    old = ed25519.Ed25519PrivateKey.generate()
    new = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(
        b"".join(
            k.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            for k in (old, new)
        )
    )
    h = await start_harness(OTA_PACKAGE_PUBLIC_KEY=str(key_file))
    signed = {}
    for name, private, content in (("old", old, b"old-key fw" * 50), ("new", new, b"fw" * 99)):
        if isinstance(private, ed25519.Ed25519PrivateKey):
            raw = private.sign(hashlib.sha256(content).digest())
        else:
            raw = private.sign(content, ec.ECDSA(hashes.SHA256()))
        signature = base64.b64encode(raw).decode()
        answer = await h.client.post(
            "/v1/packages",
            params={"type": "firmware", "version": f"2.{name}", "file_name": "fw.bin"},
            content=content,
            headers={"X-OTA-Signature": signature},
        )
        assert answer.status_code == 201, answer.text
        package = answer.json()
        assert (package["signed"], package["signature"]) == (True, signature)
        assert package["key_id"] == key_id(private.public_key())
        signed[name] = package
    unsigned = await h.upload(b"unsigned fw")
    assert (unsigned["signature"], unsigned["key_id"]) == ("", "")
    # What a rotation's last step reads: which key verified each package.
    code, out, err = await ota(h, "packages", "list")
    assert code == 0, err
    assert out.splitlines()[0].split()[-2:] == ["SIGNED", "KEY_ID"]
    assert {key_id(old.public_key()), key_id(new.public_key())} <= set(out.split())

    device = f"sig-{uuid.uuid4().hex[:6]}"
    await h.create_task(signed["new"]["id"], [device])
    await h.create_task(unsigned["id"], [device + "-u"])
    releases = {r.device_id: r.job.package for r in await h.wait_releases(2)}
    assert releases[device].signature == signed["new"]["signature"]
    assert releases[device].key_id == key_id(new.public_key())
    assert (releases[device + "-u"].signature, releases[device + "-u"].key_id) == ("", "")
