"""`ota devices cas ...` and certificate devices in `ota devices credentials` against a live
scheduler."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from tests.integration.scheduler.sched_harness import WRITE_KEY, Harness
from tests.integration.scheduler.test_sched_credentials_cli import ota
from tests.x509_kit import make_ca


async def test_device_ca_commands(harness: Harness, tmp_path: Path) -> None:
    ca = make_ca(f"CLI CA {uuid.uuid4().hex[:6]}")
    pem = tmp_path / "ca.pem"
    pem.write_text(ca.pem())
    code, _, err = await ota(harness, "devices", "cas", "add", str(pem), key=WRITE_KEY)
    assert code == 1
    assert "lacks the admin scope" in err, err
    code, out, _ = await ota(harness, "--json", "devices", "cas", "list", key=WRITE_KEY)
    assert orjson.loads(out) == []  # a write key reads, and its refusal added nothing
    code, out, err = await ota(harness, "devices", "cas", "add", str(pem))
    assert code == 0, err
    assert out.startswith(f"registered {ca.fingerprint()}  CN=CLI CA")
    code, out, _ = await ota(harness, "--json", "devices", "cas", "list")
    assert ca.fingerprint() in [c["fingerprint"] for c in orjson.loads(out)]
    code, _, err = await ota(harness, "devices", "cas", "add", str(pem))
    assert code == 1
    assert "ca_exists" in err
    code, out, _ = await ota(harness, "devices", "cas", "delete", ca.fingerprint())
    assert code == 0
    assert "removed" in out


async def test_certificate_device_commands(harness: Harness) -> None:
    d = f"clicert_{uuid.uuid4().hex[:8]}"
    code, out, err = await ota(
        harness, "devices", "credentials", "register", d, "--auth", "certificate"
    )
    assert code == 0, err
    assert f"{d}: registered, enabled, auth certificate, key -" in out
    assert "secret" not in out
    code, _, err = await ota(harness, "devices", "credentials", "auth", d, "any")
    assert code == 1
    assert "no_secret" in err
    e = f"cliany_{uuid.uuid4().hex[:8]}"
    code, out, err = await ota(harness, "devices", "credentials", "register", e, "--auth", "any")
    assert code == 0, err
    assert "auth any" in out
    assert "store it now" in out  # the generated secret, shown once
    code, out, _ = await ota(harness, "devices", "credentials", "auth", e, "secret")
    assert "auth secret" in out
