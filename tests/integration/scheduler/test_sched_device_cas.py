"""Device CAs and certificate devices through the real API on Redis: register, list, delete,
bad input, scopes, the OpenAPI declaration and the audit trail."""

from __future__ import annotations

import uuid

import pytest

from ota.clock import now_ms
from ota.device_auth import credentials_for
from tests.integration.scheduler.conftest import StartHarness
from tests.integration.scheduler.sched_harness import API_KEYS, READ_KEY, Harness
from tests.x509_kit import issue, make_ca

PEM = {"Content-Type": "text/plain"}
BROKER_KEY = "test-broker-key-0123"
SECRET = "given-secret_0123"


@pytest.fixture
async def h(start_harness: StartHarness) -> Harness:
    return await start_harness(OTA_API_KEYS=f"{API_KEYS},{BROKER_KEY}:broker")


def device() -> str:
    return f"certdev_{uuid.uuid4().hex[:8]}"


async def test_register_list_and_delete_a_device_ca(h: Harness) -> None:
    ca = make_ca(f"API CA {uuid.uuid4().hex[:6]}")
    added = await h.admin.post("/v1/device-cas", content=ca.pem(), headers=PEM)
    assert added.status_code == 201, added.text
    assert added.json()["fingerprint"] == ca.fingerprint()
    assert added.json()["subject"].startswith("CN=API CA")
    again = await h.admin.post("/v1/device-cas", content=ca.pem(), headers=PEM)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ca_exists"
    read = {"Authorization": f"Bearer {READ_KEY}"}
    listed = await h.admin.get("/v1/device-cas", headers=read)
    assert ca.fingerprint() in [c["fingerprint"] for c in listed.json()["device_cas"]]
    denied = await h.admin.delete(f"/v1/device-cas/{ca.fingerprint()}", headers=read)
    assert denied.status_code == 403
    assert (await h.admin.delete(f"/v1/device-cas/{ca.fingerprint()}")).status_code == 204
    gone = await h.admin.delete(f"/v1/device-cas/{ca.fingerprint()}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "unknown_ca"

    audit = (await h.admin.get("/v1/audit")).json()["items"]
    mine = [
        (i["action"], i["status"])
        for i in reversed(audit)
        if i["target"].get("fingerprint") == ca.fingerprint()
    ]
    assert ("delete_device_ca", 204) in mine
    assert ("delete_device_ca", 403) in mine


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not a certificate", "bad_certificate"),
        ("leaf", "not_a_ca"),
        ("two", "bad_certificate"),
    ],
)
async def test_unusable_cas_are_refused_by_name(h: Harness, body: str, code: str) -> None:
    ca = make_ca("Refused CA")
    content = {
        "not a certificate": "hello",
        "leaf": issue(ca, "dev-1").pem(),
        "two": ca.pem() + make_ca("Second").pem(),
    }[body]
    response = await h.admin.post("/v1/device-cas", content=content, headers=PEM)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    bad = await h.admin.delete("/v1/device-cas/NOT-HEX")
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "bad_fingerprint"


async def test_certificate_devices_and_auth_methods(h: Harness) -> None:
    d = device()
    registered = await h.admin.post(f"/v1/devices/{d}/credentials/certificate")
    assert registered.status_code == 201
    assert registered.json()["auth"] == "certificate"
    assert registered.json()["key_id"] is None
    assert "secret" not in registered.json()
    twice = await h.admin.post(f"/v1/devices/{d}/credentials/certificate")
    assert twice.status_code == 409
    # Accepting secrets needs a secret first.
    no_secret = await h.admin.post(f"/v1/devices/{d}/credentials/auth", json={"auth": "any"})
    assert no_secret.status_code == 409
    assert no_secret.json()["error"]["code"] == "no_secret"
    assert (await h.admin.post(f"/v1/devices/{d}/credentials/rotate")).status_code == 200
    either = await h.admin.post(f"/v1/devices/{d}/credentials/auth", json={"auth": "any"})
    assert either.json()["auth"] == "any"
    bad = await h.admin.post(f"/v1/devices/{d}/credentials/auth", json={"auth": "magic"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "bad_auth"
    shown = await h.admin.get(f"/v1/devices/{d}/credentials")
    assert shown.json()["auth"] == "any"


async def test_openapi_declares_the_device_ca_operations(h: Harness) -> None:
    spec = (await h.anon.get("/v1/openapi.json")).json()["paths"]
    assert set(spec["/v1/device-cas"]) == {"get", "post"}
    admin = [{"apiKey": ["admin"]}]
    assert spec["/v1/device-cas"]["post"]["security"] == admin
    assert spec["/v1/device-cas"]["get"]["security"] == [{"apiKey": ["read"]}]
    assert spec["/v1/device-cas/{fingerprint}"]["delete"]["security"] == admin
    assert spec["/v1/devices/{device_id}/credentials/auth"]["post"]["security"] == admin
    assert spec["/v1/devices/{device_id}/credentials/certificate"]["post"]["security"] == admin


async def test_only_an_admin_key_changes_device_cas_and_auth_methods(h: Harness) -> None:
    """A write key (h.client) is refused every change, naming the admin scope, and may read."""
    kept, new = (
        make_ca(f"kept CA {uuid.uuid4().hex[:6]}"),
        make_ca(f"new CA {uuid.uuid4().hex[:6]}"),
    )
    assert (
        await h.admin.post("/v1/device-cas", content=kept.pem(), headers=PEM)
    ).status_code == 201
    d, other = device(), device()
    assert (await h.admin.post(f"/v1/devices/{d}/credentials/certificate")).status_code == 201
    refused = [
        await h.client.post("/v1/device-cas", content=new.pem(), headers=PEM),
        await h.client.delete(f"/v1/device-cas/{kept.fingerprint()}"),
        await h.client.post(f"/v1/devices/{other}/credentials/certificate"),
        await h.client.post(f"/v1/devices/{d}/credentials/auth", json={"auth": "any"}),
    ]
    for response in refused:
        assert response.status_code == 403, response.request.url
        message = response.json()["error"]["message"]
        assert message.startswith("this API key lacks the admin scope"), message
    listed = (await h.client.get("/v1/device-cas")).json()["device_cas"]
    assert [c["fingerprint"] for c in listed] == [kept.fingerprint()]  # nothing changed
    assert (await h.client.get(f"/v1/devices/{d}/credentials")).json()["auth"] == "certificate"
    assert (await h.client.get(f"/v1/devices/{other}/credentials")).status_code == 404


async def test_a_certificate_only_device_is_never_opened_by_its_password(h: Harness) -> None:
    """The control plane's check (http mode) refuses a password once the device is moved to
    certificates, though its secret is still stored."""
    d = device()
    assert (
        await h.admin.post(f"/v1/devices/{d}/credentials", json={"secret": SECRET})
    ).status_code == 201
    c = credentials_for(d, SECRET, now_ms())
    body = {"clientid": c.client_id, "username": c.username, "password": c.password}
    broker = {"Authorization": f"Bearer {BROKER_KEY}"}
    allowed = await h.anon.post("/v1/broker/authenticate", json=body, headers=broker)
    assert allowed.json()["reason"] == "ok"
    await h.admin.post(f"/v1/devices/{d}/credentials/auth", json={"auth": "certificate"})
    refused = await h.anon.post("/v1/broker/authenticate", json=body, headers=broker)
    assert refused.json()["result"] == "deny"
    assert refused.json()["reason"] == "certificate_required"
    await h.admin.post(f"/v1/devices/{d}/credentials/auth", json={"auth": "any"})
    again = await h.anon.post("/v1/broker/authenticate", json=body, headers=broker)
    assert again.json()["reason"] == "ok"


async def test_a_certificates_facts_decide_a_certificate_device(h: Harness) -> None:
    """The broker's certificate fields (http mode; EMQX's cert_common_name alone too): the
    names must include the device id, the broker's verdict on the chain stands, and a
    secret-only device's certificate is ignored."""
    d, secret_only = device(), device()
    assert (await h.admin.post(f"/v1/devices/{d}/credentials/certificate")).status_code == 201
    assert (
        await h.admin.post(f"/v1/devices/{secret_only}/credentials", json={"secret": SECRET})
    ).status_code == 201
    broker = {"Authorization": f"Bearer {BROKER_KEY}"}

    async def ask(device_id: str, password: str = "", **cert: object) -> str:
        c = credentials_for(device_id, SECRET, now_ms())
        body = {"clientid": c.client_id, "username": device_id, "password": password, **cert}
        answer = await h.anon.post("/v1/broker/authenticate", json=body, headers=broker)
        assert answer.status_code == 200, answer.text
        reason: str = answer.json()["reason"]
        return reason

    assert await ask(d, cert_names=["unit 7", d], cert_check="ok") == "ok"
    assert await ask(d, cert_common_name=d, cert_subject=f"CN={d}") == "ok"  # EMQX's fields
    assert await ask(d, cert_common_name="someone-else") == "certificate_mismatch"
    assert await ask(d, cert_names=[d], cert_check="certificate_expired") == "certificate_expired"
    assert await ask(d) == "certificate_required"
    password = credentials_for(secret_only, SECRET, now_ms()).password
    assert await ask(secret_only, password, cert_common_name="someone-else") == "ok"
    c = credentials_for(d, SECRET, now_ms())
    bad = {"clientid": c.client_id, "username": d, "password": "", "cert_check": "maybe"}
    refused = await h.anon.post("/v1/broker/authenticate", json=bad, headers=broker)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "cert_check"
