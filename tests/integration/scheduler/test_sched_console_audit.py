"""Console actions reach the audit trail as the API's do: the operation they perform, the
session key's fingerprint, the target, the status, refusals included (scheduler/console/web.py)."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import httpx

from tests.integration.scheduler.sched_harness import READ_KEY, WRITE_KEY, Harness

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def fingerprint(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


async def log_in(harness: Harness, key: str) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client logged in to the console, and its session's CSRF token."""
    browser = httpx.AsyncClient(base_url=harness.base_url, timeout=30)
    form = await browser.get("/console/login")
    token = CSRF.search(form.text)
    assert token is not None, form.text
    answer = await browser.post("/console/login", data={"csrf": token[1], "api_key": key})
    assert answer.status_code == 303, answer.text
    page = await browser.get("/console/tasks")
    session_csrf = CSRF.search(page.text)
    assert session_csrf is not None, page.text
    return browser, session_csrf[1]


async def console_page(harness: Harness, path: str) -> str:
    """One console page, as an operator with read access sees it."""
    browser, _ = await log_in(harness, READ_KEY)
    try:
        page = await browser.get(path)
    finally:
        await browser.aclose()
    assert page.status_code == 200, page.text
    return page.text


async def audit_trail(harness: Harness) -> list[dict[str, Any]]:
    response = await harness.client.get("/v1/audit")
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return list(reversed(items))


async def test_console_actions_are_audited_like_api_requests(harness: Harness) -> None:
    device = f"console-audit-{uuid.uuid4().hex[:6]}"
    package = await harness.upload(b"console audited package")
    browser, csrf = await log_in(harness, WRITE_KEY)
    try:
        created = await browser.post(
            "/console/tasks/new",
            data={
                "csrf": csrf,
                "type": "firmware",
                "package_id": package["id"],
                "device_ids": device,
            },
        )
        assert created.status_code == 303, created.text
        tid = created.headers["location"].split("/tasks/")[1].split("?")[0]
        paused = await browser.post(f"/console/tasks/{tid}/pause", data={"csrf": csrf})
        assert paused.status_code == 303, paused.text
        forged = await browser.post(f"/console/tasks/{tid}/cancel", data={"csrf": "forged"})
        assert forged.status_code == 403
        labels = await browser.post(
            f"/console/devices/{device}/labels", data={"csrf": csrf, "tags": "lab"}
        )
        assert labels.status_code == 303, labels.text
    finally:
        await browser.aclose()
    anonymous = await harness.anon.post(f"/console/tasks/{tid}/resume", data={"csrf": csrf})
    assert anonymous.status_code == 403

    console = [i for i in await audit_trail(harness) if i["route"].startswith("/console/")]
    writer = fingerprint(WRITE_KEY)
    seen = [(i["action"], i["key_id"], i["status"], i["outcome"]) for i in console]
    assert seen == [
        ("console_login", writer, 303, "ok"),  # scheduler/console/pages_auth.py
        ("create_task", writer, 303, "ok"),
        ("pause_task", writer, 303, "ok"),
        ("cancel_task", writer, 403, "denied"),
        ("patch_device", writer, 303, "ok"),
        ("resume_task", None, 403, "denied"),
    ]
    assert console[1]["result_id"] == tid
    assert console[1]["route"] == "/console/tasks/new"
    assert console[2]["route"] == "/console/tasks/{task_id}/{op}"
    assert console[2]["target"] == {"task_id": tid, "op": "pause"}
    assert console[2]["path"] == f"/console/tasks/{tid}/pause"
    assert console[2]["client"] == "127.0.0.1"
    assert console[4]["target"] == {"device_id": device}
    assert (await harness.task(tid))["status"] == "Paused"  # the recorded action happened
