"""Package endpoints, auth and the open endpoints, against a live scheduler."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import READ_KEY, Harness

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

FW = {"type": "firmware", "version": "2.0", "file_name": "fw.bin"}


async def test_open_endpoints_need_no_key(harness: Harness) -> None:
    assert (await harness.anon.get("/healthz")).json() == {"status": "ok"}
    metrics = await harness.anon.get("/metrics")
    assert metrics.status_code == 200
    assert "ota_scheduler_" in metrics.text
    doc = (await harness.anon.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/v1/packages",
        "/v1/tasks/{task_id}/cancel",
        "/v1/webhooks/{webhook_id}/deliveries",
    ):
        assert path in doc["paths"]
    page = await harness.anon.get("/docs")
    assert "openapi.json" in page.text


async def test_auth_errors(harness: Harness) -> None:
    missing = await harness.anon.get("/v1/packages")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = await harness.anon.get(
        "/v1/packages", headers={"Authorization": "Bearer nope-nope-nope"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "unknown API key"
    read = {"Authorization": f"Bearer {READ_KEY}"}
    assert (await harness.anon.get("/v1/packages", headers=read)).status_code == 200
    denied = await harness.anon.post("/v1/packages", params=FW, content=b"x", headers=read)
    assert denied.status_code == 403
    assert "write" in denied.json()["error"]["message"]


async def test_upload_dedupe_get_list_origin(harness: Harness) -> None:
    content = b"\x7fELF" + bytes(range(256)) * 4000
    first = await harness.client.post("/v1/packages", params=FW, content=content)
    assert first.status_code == 201, first.text
    package = first.json()
    assert package["sha256"] == hashlib.sha256(content).hexdigest()
    assert package["size"] == len(content)
    assert package["deduplicated"] is False
    again = await harness.client.post("/v1/packages", params=FW, content=content)
    assert again.status_code == 200
    assert again.json()["id"] == package["id"]
    assert again.json()["deduplicated"] is True
    other = await harness.client.post(
        "/v1/packages", params={**FW, "version": "2.1"}, content=content
    )
    assert other.status_code == 201
    assert other.json()["id"] != package["id"]
    blobs = list((harness.settings.package_dir / "sha256").iterdir())
    assert [b.name for b in blobs] == [package["sha256"]]
    got = await harness.client.get(f"/v1/packages/{package['id']}")
    assert got.json()["version"] == "2.0"
    listed = (await harness.client.get("/v1/packages", params={"limit": 1})).json()
    assert len(listed["items"]) == 1
    assert listed["next_cursor"] == "1"
    rest = (await harness.client.get("/v1/packages", params={"cursor": 1})).json()
    assert {p["id"] for p in listed["items"] + rest["items"]} == {package["id"], other.json()["id"]}
    body = await harness.client.get(f"/v1/origin/sha256/{package['sha256']}")
    assert body.content == content
    part = await harness.client.get(
        f"/v1/origin/sha256/{package['sha256']}", headers={"Range": "bytes=4-9"}
    )
    assert part.status_code == 206
    assert part.content == content[4:10]


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({**FW, "type": "kernel"}, "bad_value", "type"),
        ({"type": "firmware", "file_name": "f.bin"}, "bad_value", "version"),
        ({**FW, "file_name": "../etc/passwd"}, "bad_value", "file_name"),
        (
            {**FW, "allowed_sources": ",".join(f"1.{i}" for i in range(21))},
            "too_many",
            "allowed_sources",
        ),
        ({**FW, "colour": "blue"}, "unknown_field", "colour"),
        ({**FW, "description": "x" * 2000}, "too_long", "description"),
    ],
)
async def test_bad_upload_metadata(
    harness: Harness, params: dict[str, str], code: str, field: str
) -> None:
    response = await harness.client.post("/v1/packages", params=params, content=b"data")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert (await harness.client.get("/v1/packages")).json()["items"] == []


async def test_empty_upload_and_unknowns(harness: Harness) -> None:
    empty = await harness.client.post("/v1/packages", params=FW, content=b"")
    assert empty.json()["error"]["code"] == "empty_package"
    assert list((harness.settings.package_dir / "sha256").iterdir()) == []
    assert (await harness.client.get("/v1/packages/nope")).status_code == 404
    assert (await harness.client.delete("/v1/packages/nope")).status_code == 404
    bad = await harness.client.get("/v1/origin/sha256/xyz")
    assert bad.json()["error"]["code"] == "bad_sha256"
    missing = await harness.client.get("/v1/origin/sha256/" + "0" * 64)
    assert missing.status_code == 404


async def test_cut_off_upload_leaves_nothing(harness: Harness) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 65536
        yield b"b" * 65536
        raise ConnectionAbortedError("client went away")

    with pytest.raises(ConnectionAbortedError):
        await harness.client.post("/v1/packages", params=FW, content=body())
    root: Path = harness.settings.package_dir

    async def clean() -> bool:
        return not any((root / "tmp").iterdir())

    from tests.integration.scheduler.sched_harness import eventually

    await eventually(clean, "the temporary upload file to be removed")
    assert list((root / "sha256").iterdir()) == []
    assert (await harness.client.get("/v1/packages")).json()["items"] == []


async def test_too_large_upload_is_refused(start_harness: StartHarness) -> None:
    h = await start_harness(OTA_PACKAGE_MAX_BYTES="1000")
    announced = await h.client.post("/v1/packages", params=FW, content=b"x" * 2000)
    assert announced.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 400

    streamed = await h.client.post("/v1/packages", params=FW, content=chunks())
    assert streamed.status_code == 413
    assert list((h.settings.package_dir / "sha256").iterdir()) == []


@pytest.mark.parametrize("algorithm", ["ed25519", "p256"])
async def test_signed_uploads(start_harness: StartHarness, tmp_path: Path, algorithm: str) -> None:
    content = b"signed firmware" * 1000
    if algorithm == "ed25519":
        private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
        )
        sig = private.sign(hashlib.sha256(content).digest())  # type: ignore[call-arg]
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        sig = private.sign(content, ec.ECDSA(hashes.SHA256()))
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path = tmp_path / "signing.pem"
    key_path.write_bytes(pem)
    h = await start_harness(
        OTA_PACKAGE_PUBLIC_KEY=str(key_path), OTA_PACKAGE_REQUIRE_SIGNATURE="true"
    )
    unsigned = await h.client.post("/v1/packages", params=FW, content=content)
    assert unsigned.json()["error"]["code"] == "signature_required"
    forged = base64.b64encode(bytes(len(sig))).decode()
    bad = await h.client.post(
        "/v1/packages", params=FW, content=content, headers={"X-OTA-Signature": forged}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "bad_signature"
    assert list((h.settings.package_dir / "sha256").iterdir()) == []
    notb64 = await h.client.post(
        "/v1/packages", params=FW, content=content, headers={"X-OTA-Signature": "!!!"}
    )
    assert notb64.json()["error"]["code"] == "bad_signature"
    good = await h.client.post(
        "/v1/packages",
        params=FW,
        content=content,
        headers={"X-OTA-Signature": base64.b64encode(sig).decode()},
    )
    assert good.status_code == 201, good.text
    assert good.json()["signed"] is True


async def test_delete_refused_while_task_uses_package(harness: Harness) -> None:
    package = await harness.upload(b"in use")
    tid = await harness.create_task(package["id"], ["del-dev-1"])
    refused = await harness.client.delete(f"/v1/packages/{package['id']}")
    assert refused.status_code == 409
    assert tid in refused.json()["error"]["message"]
    await harness.wait_releases(1)
    harness.job_event("del-dev-1", tid, "SUCCEEDED")
    await harness.wait_status(tid, "Success")

    async def deleted() -> bool:
        response = await harness.client.delete(f"/v1/packages/{package['id']}")
        return response.status_code == 204

    from tests.integration.scheduler.sched_harness import eventually

    await eventually(deleted, "the package to become deletable")
    assert not (harness.settings.package_dir / "sha256" / package["sha256"]).exists()
    assert (await harness.client.get(f"/v1/packages/{package['id']}")).status_code == 404
