"""Stored API keys (scheduler/apikeys.py): created by an admin key and shown once, used at
once, scoped, revoked with immediate effect (API and console), audited, rebuilt from Kafka."""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

import httpx
import redis

from ops.cli import main as ota_cli
from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import (
    ADMIN_KEY,
    API_KEYS,
    READ_KEY,
    WRITE_KEY,
    Harness,
)
from tests.integration.scheduler.test_sched_console_audit import CSRF

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

KEYS = API_KEYS
HOOK = {"url": "http://127.0.0.1:9/hook", "secret": "s" * 16}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create(harness: Harness, name: str, scopes: list[str]) -> dict[str, Any]:
    made = await harness.anon.post(
        "/v1/keys", json={"name": name, "scopes": scopes}, headers=bearer(ADMIN_KEY)
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def test_a_created_key_works_at_once_and_a_revoked_one_is_refused_at_once(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(OTA_API_KEYS=KEYS)
    made = await create(harness, "ci pipeline", ["write"])
    key = made["key"]
    assert made["scopes"] == ["read", "write"]  # write implies read
    assert made["key_id"] == "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    listed = (await harness.anon.get("/v1/keys", headers=bearer(ADMIN_KEY))).json()["items"]
    assert [(k["id"], k["name"]) for k in listed] == [(made["id"], "ci pipeline")]
    assert key not in str(listed)
    assert "sha256" not in listed[0]

    hook = await harness.anon.post("/v1/webhooks", json=HOOK, headers=bearer(key))
    assert hook.status_code == 201, hook.text
    revoked = await harness.anon.delete(f"/v1/keys/{made['id']}", headers=bearer(ADMIN_KEY))
    assert revoked.status_code == 200
    refused = await harness.anon.post("/v1/webhooks", json=HOOK, headers=bearer(key))
    assert refused.status_code == 401
    assert (await harness.anon.get("/v1/tasks", headers=bearer(key))).status_code == 401
    again = await harness.anon.delete(f"/v1/keys/{made['id']}", headers=bearer(ADMIN_KEY))
    assert again.status_code == 404

    trail = (await harness.client.get("/v1/audit")).json()["items"]
    admin = "sha256:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()[:12]
    seen = [(i["action"], i["key_id"], i["status"]) for i in reversed(trail)]
    assert seen == [
        ("create_key", admin, 201),
        ("create_webhook", made["key_id"], 201),
        ("revoke_key", admin, 200),
        ("create_webhook", None, 401),
        ("revoke_key", admin, 404),
    ]
    assert trail[-1]["result_id"] == made["id"]
    assert key not in str(trail)


async def test_scopes_are_enforced_and_only_admin_keys_manage_keys(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(OTA_API_KEYS=KEYS)
    reader = (await create(harness, "dashboard", ["read"]))["key"]
    assert (await harness.anon.get("/v1/tasks", headers=bearer(reader))).status_code == 200
    writes = await harness.anon.post("/v1/webhooks", json=HOOK, headers=bearer(reader))
    assert writes.status_code == 403
    body = {"name": "escalation", "scopes": ["admin"]}
    for key in (reader, READ_KEY, WRITE_KEY):
        made = await harness.anon.post("/v1/keys", json=body, headers=bearer(key))
        assert made.status_code == 403, key
        assert made.json()["error"]["message"].startswith("this API key lacks the admin scope")
        assert (await harness.anon.get("/v1/keys", headers=bearer(key))).status_code == 403
    admin = (await create(harness, "second admin", ["admin"]))["key"]
    assert (await harness.anon.get("/v1/keys", headers=bearer(admin))).status_code == 200
    forged = reader[:-4] + "AAAA"  # the right id, the wrong secret
    assert (await harness.anon.get("/v1/tasks", headers=bearer(forged))).status_code == 401
    for bad in ({"name": "x", "scopes": ["broker"]}, {"name": "x", "scopes": []}, {"name": ""}):
        refused = await harness.anon.post("/v1/keys", json=bad, headers=bearer(ADMIN_KEY))
        assert refused.status_code == 422, bad
    listed = (await harness.anon.get("/v1/keys", headers=bearer(ADMIN_KEY))).json()["items"]
    assert [k["name"] for k in listed] == ["dashboard", "second admin"]  # nothing else made


async def test_stored_keys_come_back_from_kafka_when_redis_is_lost(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness(OTA_API_KEYS=KEYS)
    kept = (await create(first, "kept", ["read"]))["key"]
    gone = await create(first, "gone", ["read"])
    await first.anon.delete(f"/v1/keys/{gone['id']}", headers=bearer(ADMIN_KEY))
    await first.stop()

    sched_redis.flushdb()
    second = await start_harness(
        OTA_API_KEYS=KEYS, OTA_SCHEDULER_PORT=str(first.settings.http_port)
    )
    assert (await second.anon.get("/v1/tasks", headers=bearer(kept))).status_code == 200
    assert (await second.anon.get("/v1/tasks", headers=bearer(gone["key"]))).status_code == 401


async def test_the_console_accepts_a_stored_key_until_it_is_revoked(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(OTA_API_KEYS=KEYS)
    made = await create(harness, "operator", ["write"])
    async with httpx.AsyncClient(base_url=harness.base_url, timeout=30) as browser:
        form = await browser.get("/console/login")
        token = CSRF.search(form.text)
        assert token is not None
        login = await browser.post(
            "/console/login", data={"csrf": token[1], "api_key": made["key"]}
        )
        assert login.status_code == 303
        page = await browser.get("/console/webhooks")
        csrf = CSRF.search(page.text)
        assert page.status_code == 200
        assert csrf is not None
        added = await browser.post("/console/webhooks/add", data={"csrf": csrf[1], **HOOK})
        assert added.status_code == 303, added.text
        await harness.anon.delete(f"/v1/keys/{made['id']}", headers=bearer(ADMIN_KEY))
        after = await browser.post("/console/webhooks/add", data={"csrf": csrf[1], **HOOK})
        assert after.status_code == 403
        assert (await browser.get("/console/webhooks")).status_code == 303  # to the login page
    trail = (await harness.client.get("/v1/audit")).json()["items"]
    console = [
        (i["action"], i["key_id"], i["status"])
        for i in reversed(trail)
        if i["route"].startswith("/console/")
    ]
    # The refused attempt still names the revoked key: its session is signed.
    assert console == [
        ("console_login", made["key_id"], 303),
        ("create_webhook", made["key_id"], 303),
        ("create_webhook", made["key_id"], 403),
    ]


async def test_the_cli_creates_lists_and_revokes_keys(start_harness: StartHarness) -> None:
    harness = await start_harness(OTA_API_KEYS=KEYS)
    env = {"OTA_API_URL": harness.base_url, "OTA_API_KEY": ADMIN_KEY}

    async def ota(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(ota_cli, list(argv), env, out, err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = await ota("keys", "create", "nightly", "--scopes", "read,write")
    assert code == 0, err
    key = out.splitlines()[-1]
    assert key.startswith("ota_")
    assert (await harness.anon.get("/v1/tasks", headers=bearer(key))).status_code == 200
    code, out, _ = await ota("keys", "list")
    assert code == 0
    kid = out.splitlines()[1].split()[0]
    assert "nightly" in out
    assert "read,write" in out
    assert key not in out
    code, out, _ = await ota("keys", "revoke", kid)
    assert code == 0
    assert "revoked" in out
    assert (await harness.anon.get("/v1/tasks", headers=bearer(key))).status_code == 401
    env["OTA_API_KEY"] = WRITE_KEY
    code, _, err = await ota("keys", "list")
    assert code == 1
    assert "lacks the admin scope" in err
