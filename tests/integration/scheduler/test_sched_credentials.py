"""Device credentials through the real API on Redis: every endpoint, scope and auth reason."""

from __future__ import annotations

import csv
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from ota.clock import now_ms
from ota.device_auth import HOUR_MS, Credentials, Reason, SignType, credentials_for
from ota.metrics import REGISTRY
from scheduler.credentials import REVOKED_CHANNEL, record_key
from tests.integration.scheduler.conftest import StartHarness
from tests.integration.scheduler.sched_harness import API_KEYS, READ_KEY, WRITE_KEY, Harness

BROKER_KEY = "test-broker-key-0123"
SECRET = "given-secret_0123"


@pytest.fixture
async def h(start_harness: StartHarness) -> Harness:
    return await start_harness(OTA_API_KEYS=f"{API_KEYS},{BROKER_KEY}:broker")


@pytest.fixture
async def broker(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=h.base_url, headers={"Authorization": f"Bearer {BROKER_KEY}"}, timeout=30
    ) as client:
        yield client


def device(prefix: str = "cred") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"  # an underscore, as IoTDA ids have


def path(device_id: str, op: str = "") -> str:
    return f"/v1/devices/{device_id}/credentials" + (f"/{op}" if op else "")


async def auth(broker: httpx.AsyncClient, c: Credentials, **override: Any) -> dict[str, Any]:
    body = {
        "clientid": c.client_id,
        "username": c.username,
        "password": c.password,
        "peerhost": "10.0.0.7",
        **override,
    }
    response = await broker.post("/v1/broker/authenticate", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["is_superuser"] is False
    assert answer["result"] == ("allow" if answer["reason"] == "ok" else "deny")
    return answer


def revoked(action: str) -> float:
    value = REGISTRY.get_sample_value("ota_scheduler_credentials_revoked_total", {"action": action})
    return value or 0.0


async def test_register_show_and_every_auth_reason(
    h: Harness, broker: httpx.AsyncClient, sched_redis: redis.Redis[bytes]
) -> None:
    d = device()
    created = await h.admin.post(path(d), json={"secret": SECRET})
    assert created.status_code == 201, created.text
    body = created.json()
    assert "secret" not in body  # a given secret is not echoed
    assert body["device_id"] == d
    assert body["enabled"] is True
    assert body["rotated_ms"] is None
    shown = (await h.admin.get(path(d), headers={"Authorization": f"Bearer {READ_KEY}"})).json()
    assert shown == body
    # At rest: sealed, the secret nowhere in Redis.
    stored = sched_redis.hgetall(record_key(d))
    assert set(stored) == {b"kid", b"box", b"on", b"created_ms", b"seq"}  # seq: credential_log
    assert SECRET.encode() not in b"".join(stored.values())

    now = now_ms()
    good = credentials_for(d, SECRET, now)
    assert await auth(broker, good) == {
        "result": "allow",
        "is_superuser": False,
        "reason": "ok",
        "device_id": d,
    }
    reasons = {
        Reason.MALFORMED_CLIENT_ID: await auth(broker, good, clientid=f"{d}_0_7_2026112712"),
        Reason.USERNAME_MISMATCH: await auth(broker, good, username="someone-else"),
        Reason.BAD_PASSWORD: await auth(broker, good, password="0" * 64),
        Reason.CLOCK_SKEW: await auth(broker, credentials_for(d, SECRET, now - 3 * HOUR_MS)),
        Reason.UNKNOWN_DEVICE: await auth(broker, credentials_for(device(), SECRET, now)),
    }
    old = credentials_for(d, SECRET, now - 30 * 24 * HOUR_MS, SignType.NO_TIME_CHECK)
    assert (await auth(broker, old))["reason"] == "ok"  # sign type 0: the hour is not checked
    assert (await auth(broker, good, password=None))["reason"] == "bad_password"
    assert (await auth(broker, good, clientid="x" * 300))["reason"] == "malformed_client_id"
    await h.admin.post(path(d, "disable"))
    reasons[Reason.DISABLED] = await auth(broker, good)
    for reason, answer in reasons.items():
        assert answer["reason"] == reason.value, reason
        unparsed = reason is Reason.MALFORMED_CLIENT_ID
        assert (answer["device_id"] is None) == unparsed, reason
    for reason in (Reason.USERNAME_MISMATCH, Reason.BAD_PASSWORD, Reason.CLOCK_SKEW):
        assert reasons[reason]["device_id"] == d
    assert reasons[Reason.DISABLED]["device_id"] == d

    metrics = (await h.anon.get("/metrics")).text
    assert 'ota_scheduler_broker_auth_total{reason="disabled",result="deny"}' in metrics
    assert 'ota_scheduler_broker_auth_total{reason="ok",result="allow"}' in metrics


async def test_generated_secret_is_returned_once_and_works(
    h: Harness, broker: httpx.AsyncClient
) -> None:
    d = device()
    created = await h.admin.post(path(d))  # no body: generate
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert len(secret) == 32
    assert "secret" not in (await h.admin.get(path(d))).json()
    assert (await auth(broker, credentials_for(d, secret, now_ms())))["reason"] == "ok"
    again = await h.admin.post(path(d), json={"secret": SECRET})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "credentials_exist"


async def test_rotation_refuses_the_old_secret(h: Harness, broker: httpx.AsyncClient) -> None:
    d = device()
    await h.admin.post(path(d), json={"secret": SECRET})
    before = revoked("rotated")
    rotated = await h.admin.post(path(d, "rotate"))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert rotated.json()["rotated_ms"] >= rotated.json()["created_ms"]
    assert revoked("rotated") == before + 1
    now = now_ms()
    assert (await auth(broker, credentials_for(d, SECRET, now)))["reason"] == "bad_password"
    assert (await auth(broker, credentials_for(d, new, now)))["reason"] == "ok"
    given = await h.admin.post(path(d, "rotate"), json={"secret": "third-secret-000"})
    assert "secret" not in given.json()
    assert (await auth(broker, credentials_for(d, new, now)))["reason"] == "bad_password"
    assert (await auth(broker, credentials_for(d, "third-secret-000", now)))["reason"] == "ok"


async def test_disable_enable_delete(h: Harness, broker: httpx.AsyncClient) -> None:
    d = device()
    await h.admin.post(path(d), json={"secret": SECRET})
    good = credentials_for(d, SECRET, now_ms())
    before = revoked("disabled")
    disabled = await h.admin.post(path(d, "disable"))
    assert disabled.json()["enabled"] is False
    assert (await h.admin.post(path(d, "disable"))).status_code == 200  # idempotent
    assert revoked("disabled") == before + 1  # only the change revokes
    assert (await auth(broker, good))["reason"] == "disabled"
    enabled = await h.admin.post(path(d, "enable"))
    assert enabled.json()["enabled"] is True
    assert (await auth(broker, good))["reason"] == "ok"
    before = revoked("deleted")
    assert (await h.admin.delete(path(d))).status_code == 204
    assert revoked("deleted") == before + 1
    assert (await auth(broker, good))["reason"] == "unknown_device"
    for method, op in (("GET", ""), ("DELETE", ""), ("POST", "rotate"), ("POST", "enable")):
        missing = await h.admin.request(method, path(d, op))
        assert missing.status_code == 404, (method, op)
        assert missing.json()["error"]["code"] == "unknown_credentials"


async def test_revocations_are_announced_to_the_broker(
    h: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    """Rotate, disable and delete each publish on the channel the device broker listens to
    (it disconnects the device's live session); enabling does not."""
    d = device()
    await h.admin.post(path(d), json={"secret": SECRET})
    listener = sched_redis.pubsub()
    listener.subscribe(REVOKED_CHANNEL)
    try:
        assert listener.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        for method, op in (
            ("POST", "rotate"),
            ("POST", "disable"),
            ("POST", "enable"),
            ("DELETE", ""),
        ):
            assert (await h.admin.request(method, path(d, op))).status_code in (200, 204)
        heard = []
        while (message := listener.get_message(timeout=2)) is not None:
            heard.append(orjson.loads(message["data"]))
    finally:
        listener.close()
    assert heard == [
        {"device_id": d, "action": "rotated"},
        {"device_id": d, "action": "disabled"},
        {"device_id": d, "action": "deleted"},
    ]


async def test_bad_input(h: Harness, broker: httpx.AsyncClient) -> None:
    bad_id = await h.admin.post(path("no spaces allowed"), json={})
    assert bad_id.status_code == 422
    assert bad_id.json()["error"]["code"] == "bad_device_id"
    for body, code in (
        ({"secret": "short"}, "bad_secret"),
        ({"secret": "has spaces in it"}, "bad_secret"),
        ({"secret": 12345678}, "wrong_type"),
        ({"secret": SECRET, "extra": 1}, "unknown_field"),
        ([SECRET], "wrong_type"),
    ):
        response = await h.admin.post(path(device()), json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == code, body
        assert "has spaces" not in response.text  # a secret is never echoed, even a bad one
    unreadable = await h.admin.post(path(device()), content=b"{nope")
    assert unreadable.json()["error"]["code"] == "invalid_json"
    for body, code in (
        ({"username": "u", "password": "p"}, "missing_field"),
        ({"clientid": 7, "username": "u", "password": "p"}, "wrong_type"),
    ):
        response = await broker.post("/v1/broker/authenticate", json=body)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == code
    assert (await broker.post("/v1/broker/authenticate", content=b"[")).status_code == 400


async def test_scopes(h: Harness, broker: httpx.AsyncClient) -> None:
    d = device()
    read = {"Authorization": f"Bearer {READ_KEY}"}
    assert (await h.admin.post(path(d), json={"secret": SECRET})).status_code == 201
    assert (await h.admin.get(path(d), headers=read)).status_code == 200
    for method, op in (("POST", "rotate"), ("POST", "disable"), ("POST", "enable"), ("DELETE", "")):
        response = await h.admin.request(method, path(d, op), headers=read)
        assert response.status_code == 403, (method, op)
    assert (await h.anon.get(path(d))).status_code == 401
    body = {"clientid": f"{d}_0_0_2026112712", "username": d, "password": ""}
    # Only the broker key may authenticate devices, and it may do nothing else.
    assert (await h.admin.post("/v1/broker/authenticate", json=body)).status_code == 403
    assert (await h.anon.post("/v1/broker/authenticate", json=body)).status_code == 401
    assert (await broker.post("/v1/broker/authenticate", json=body)).status_code == 200
    assert (await broker.get(path(d))).status_code == 403
    assert (await broker.get("/v1/devices")).status_code == 403
    assert (await broker.post("/v1/credentials/import", content=b"x\n")).status_code == 403


async def test_a_write_key_cannot_let_devices_in(h: Harness, broker: httpx.AsyncClient) -> None:
    """Every credential change needs the admin scope; the write key (h.client) may read."""
    known, new = device(), device()
    assert (await h.admin.post(path(known), json={"secret": SECRET})).status_code == 201
    before = (await h.admin.get(path(known))).json()
    refused = [
        await h.client.post(path(new), json={"secret": SECRET}),
        await h.client.post("/v1/credentials/import", content=f"{new},{SECRET}\n".encode()),
        *[await h.client.post(path(known, op)) for op in ("rotate", "disable", "enable")],
        await h.client.delete(path(known)),
    ]
    for response in refused:
        assert response.status_code == 403, response.request.url
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert error["message"].startswith("this API key lacks the admin scope"), error
        assert "device credentials" in error["message"]
    # Nothing changed: the new device is unknown, the known one as it was and still let in.
    assert (await h.client.get(path(new))).status_code == 404
    assert (await h.client.get(path(known))).json() == before
    now = now_ms()
    assert (await auth(broker, credentials_for(known, SECRET, now)))["reason"] == "ok"
    assert (await auth(broker, credentials_for(new, SECRET, now)))["reason"] == "unknown_device"
    # The refusals are in the audit trail under the write key's fingerprint.
    trail = (await h.client.get("/v1/audit")).json()["items"]
    writer = "sha256:" + hashlib.sha256(WRITE_KEY.encode()).hexdigest()[:12]
    denied = {i["action"] for i in trail if i["key_id"] == writer and i["status"] == 403}
    assert denied == {"register", "import_credentials", "rotate", "disable", "enable", "delete"}


async def test_openapi_declares_every_credential_operation(h: Harness) -> None:
    spec = (await h.anon.get("/v1/openapi.json")).json()["paths"]
    assert set(spec["/v1/devices/{device_id}/credentials"]) == {"get", "post", "delete"}
    for op in ("rotate", "disable", "enable"):
        assert "post" in spec[f"/v1/devices/{{device_id}}/credentials/{op}"]
    for route, method in (
        ("/v1/credentials/import", "post"),
        ("/v1/devices/{device_id}/credentials", "post"),
        ("/v1/devices/{device_id}/credentials", "delete"),
        ("/v1/devices/{device_id}/credentials/rotate", "post"),
    ):
        assert spec[route][method]["security"] == [{"apiKey": ["admin"]}], (route, method)
    reading = spec["/v1/devices/{device_id}/credentials"]["get"]["security"]
    assert reading == [{"apiKey": ["read"]}]
    auth_op = spec["/v1/broker/authenticate"]["post"]
    assert auth_op["security"] == [{"apiKey": ["broker"]}]


async def test_bulk_import_with_bad_lines(h: Harness, broker: httpx.AsyncClient) -> None:
    run = uuid.uuid4().hex[:6]
    given = [f"imp_{run}_{i}" for i in range(2500)]
    generated = [f"gen_{run}_{i}" for i in range(3)]
    existing = device()
    await h.admin.post(path(existing), json={"secret": SECRET})
    lines = [f"{d},secret-{i:06d}" for i, d in enumerate(given)]
    lines[10:10] = [
        "# a comment",
        "",
        "bad id,secret-000000",  # line 13
        f"{generated[0]}",  # 14
        f"{device()},short",  # 15
        f"{device()},a,b",  # 16
        f"  {generated[1]}  ",  # 17
        f"{existing},another-secret",  # 18
        f"{given[0]},again-secret",  # 19: already imported (line 1)
        "x" * 2000,  # 20
    ]
    lines.append(generated[2])
    body = ("\n".join(lines)).encode()  # no final newline: the last line still counts
    response = await h.admin.post("/v1/credentials/import", content=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    report = response.text.splitlines()
    assert report[0] == "line,device_id,secret,error"
    assert report[-1] == f"# registered {len(given) + 3}, generated 3, refused 6"
    rows = {int(r[0]): r for r in csv.reader(report[1:-1])}
    errors = {n: r[3].split(":")[0] for n, r in rows.items() if r[3]}
    assert errors == {
        13: "bad_device_id",
        15: "bad_secret",
        16: "bad_line",
        18: "already_registered",
        19: "already_registered",
        20: "line_too_long",
    }
    secrets = {r[1]: r[2] for r in rows.values() if r[2]}
    assert set(secrets) == set(generated)
    assert sorted(rows) == list(rows)  # in line order
    now = now_ms()
    for d, secret in secrets.items():
        assert (await auth(broker, credentials_for(d, secret, now)))["reason"] == "ok"
    assert (await auth(broker, credentials_for(given[0], "secret-000000", now)))["reason"] == "ok"
    assert (await auth(broker, credentials_for(given[-1], "secret-002499", now)))["reason"] == "ok"
    # The refused lines changed nothing.
    assert (await auth(broker, credentials_for(existing, SECRET, now)))["reason"] == "ok"
    assert (await h.admin.get(path("bad id"))).status_code == 422


async def test_large_import_streams_without_a_concurrent_reader(h: Harness) -> None:
    # httpx sends the whole body before reading: the report must not wait for it.
    run = uuid.uuid4().hex[:6]
    n = 200_000  # an 11 MB report: far beyond what socket buffers hold unread
    body = "".join(f"big_{run}_{i}\n" for i in range(n)).encode()
    response = await h.admin.post("/v1/credentials/import", content=body, timeout=120)
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[-1] == f"# registered {n}, generated {n}, refused 0"
    assert len(lines) == n + 2
