"""The reference agent checks a package's signature before installing, when it trusts
signing keys: a package signed with a key it does not trust, or not signed at all, is
refused with result code 12 (Package signature verification failed) and its version
stays; a device without keys installs as an IoTDA device does (SHA-256 only)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devices.agent import DeviceAgent
from devices.behaviour import Behaviour
from devices.http import HttpClient
from ota.catalog import RESULT_SIGNATURE_INVALID, RESULT_SUCCESS, cause_for_result_code
from ota.package_signing import key_id
from ota.protocol import PARA_KEY_ID, PARA_SIGNATURE, parse_uplink

CONTENT = b"signed firmware" * 500
SHA = hashlib.sha256(CONTENT).hexdigest()
PLATFORM_KEY = ed25519.Ed25519PrivateKey.generate()
ATTACKER_KEY = ed25519.Ed25519PrivateKey.generate()


def pem(private: ed25519.Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class _Response:
    status, headers = 200, {"etag": f'"{SHA}"'}

    async def chunks(self) -> AsyncIterator[bytes]:
        yield CONTENT


class _Http:
    """Serves the package to every GET."""

    @contextlib.asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_Response]:
        yield _Response()


def command(signer: ed25519.Ed25519PrivateKey | None) -> bytes:
    paras: dict[str, Any] = {
        "version": "2.0",
        "url": "https://edge.example/packages/sha256/" + SHA,
        "file_size": len(CONTENT),
        "file_name": "fw.bin",
        "sign": SHA,
    }
    if signer is not None:
        paras[PARA_SIGNATURE] = base64.b64encode(signer.sign(bytes.fromhex(SHA))).decode()
        paras[PARA_KEY_ID] = key_id(signer.public_key())
    service = {"service_id": "$ota", "event_type": "firmware_upgrade", "event_id": "c1"}
    return orjson.dumps({"object_device_id": "dev-1", "services": [{**service, "paras": paras}]})


async def upgrade(trusted: bytes, signer: ed25519.Ed25519PrivateKey | None) -> tuple[int, str]:
    """The final result code the agent reports, and its firmware version after."""
    sent: list[bytes] = []

    async def publish(topic: str, payload: bytes) -> None:
        sent.append(payload)

    behaviour = Behaviour(trusted_keys_pem=trusted, progress_every_pct=0)
    agent = DeviceAgent("dev-1", publish, cast(HttpClient, _Http()), behaviour)
    agent.on_downlink(command(signer))
    await agent.finished.wait()
    await agent.close()
    last = parse_uplink("$oc/devices/dev-1/sys/events/up", sent[-1]).events[-1]
    return last.paras["result_code"], agent.fw_version


@pytest.mark.parametrize(
    ("trusted", "signer", "code", "version"),
    [
        (pem(PLATFORM_KEY), PLATFORM_KEY, RESULT_SUCCESS, "2.0"),
        (pem(ATTACKER_KEY) + pem(PLATFORM_KEY), PLATFORM_KEY, RESULT_SUCCESS, "2.0"),
        (pem(PLATFORM_KEY), ATTACKER_KEY, RESULT_SIGNATURE_INVALID, "1.0"),
        (pem(PLATFORM_KEY), None, RESULT_SIGNATURE_INVALID, "1.0"),
        (b"", None, RESULT_SUCCESS, "2.0"),
        (b"", ATTACKER_KEY, RESULT_SUCCESS, "2.0"),
    ],
    ids=[
        "trusted-key",
        "one-of-two-keys",
        "untrusted-key",
        "unsigned-refused",
        "no-keys-unsigned",
        "no-keys-ignores-signature",
    ],
)
async def test_the_agent_installs_only_what_verifies(
    trusted: bytes, signer: ed25519.Ed25519PrivateKey | None, code: int, version: str
) -> None:
    assert await upgrade(trusted, signer) == (code, version)


def test_the_refusal_is_a_named_cause() -> None:
    assert cause_for_result_code(RESULT_SIGNATURE_INVALID).message == (
        "Package signature verification failed"
    )
