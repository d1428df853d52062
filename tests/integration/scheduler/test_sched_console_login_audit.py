"""Console logins and logouts in the audit trail (scheduler/console/pages_auth.py), in Redis
and Kafka's audit topic, never with the key; a flood of failed logins is throttled per
address and writes at most the audit budget (scheduler/console/login_guard.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from kafka import TopicPartition

from ota.kafka_clients import make_consumer
from ota.metrics import REGISTRY
from tests.integration.scheduler.conftest import StartHarness
from tests.integration.scheduler.sched_harness import API_KEYS, WRITE_KEY, Harness, eventually
from tests.integration.scheduler.test_sched_console_audit import (
    CSRF,
    audit_trail,
    fingerprint,
    log_in,
)

BROKER_KEY = "test-broker-key-0123"  # a known key without the read scope
GUESS = "guessed-key-0000000001"
UNRECORDED = "console_login_failures_unrecorded"


async def try_login(browser: httpx.AsyncClient, key: str, csrf: str | None = None) -> int:
    """A login from a fresh form as a browser sends it (the form's cookie stays in
    `browser`); `csrf` replaces the form's token."""
    form = await browser.get("/console/login")
    token = CSRF.search(form.text)
    assert token is not None, form.text
    data = {"csrf": csrf or token[1], "api_key": key}
    return (await browser.post("/console/login", data=data)).status_code


def logins(trail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in trail if i["route"] in ("/console/login", "/console/logout")]


def kafka_records(harness: Harness, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The audit topic's records with these ids, waiting until all are there."""
    consumer = make_consumer(harness.settings.common, group_id=None, client_id="login-audit")
    found: dict[str, dict[str, Any]] = {}
    try:
        tp = TopicPartition(harness.topics.audit, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 30
        while not ids <= set(found) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                for r in records:
                    record = orjson.loads(r.value)
                    found[record["id"]] = {**record, "kafka_key": r.key.decode()}
    finally:
        consumer.close()
    return found


def unrecorded_logins() -> float:
    """Failed logins counted, not recorded one by one (every result)."""
    return sum(
        REGISTRY.get_sample_value(
            "ota_scheduler_console_logins_total", {"result": result, "recorded": "no"}
        )
        or 0.0
        for result in ("bad_form", "bad_key", "throttled")
    )


async def test_logins_and_logouts_are_audited_without_the_key(start_harness: StartHarness) -> None:
    harness = await start_harness(OTA_API_KEYS=f"{API_KEYS},{BROKER_KEY}:broker")
    browser, csrf = await log_in(harness, WRITE_KEY)
    try:
        forged = await browser.post("/console/logout", data={"csrf": "forged"})
        assert forged.status_code == 403
        out = await browser.post("/console/logout", data={"csrf": csrf})
        assert out.status_code == 303
    finally:
        await browser.aclose()
    async with httpx.AsyncClient(base_url=harness.base_url, timeout=30) as stranger:
        assert await try_login(stranger, GUESS) == 401
        assert await try_login(stranger, BROKER_KEY) == 401
        assert await try_login(stranger, GUESS, csrf="forged") == 403
        nobody = await stranger.post("/console/logout", data={"csrf": "forged"})
        assert nobody.status_code == 303  # no session: nothing ended, nothing recorded

    records = logins(await audit_trail(harness))
    writer = fingerprint(WRITE_KEY)
    seen = [(i["action"], i["key_id"], i["status"], i["outcome"]) for i in records]
    assert seen == [
        ("console_login", writer, 303, "ok"),
        ("console_logout", writer, 403, "denied"),
        ("console_logout", writer, 303, "ok"),
        ("console_login", None, 401, "denied"),  # an unknown key is not named at all
        ("console_login", fingerprint(BROKER_KEY), 401, "denied"),
        ("console_login", None, 403, "denied"),
    ]
    assert {(i["method"], i["client"]) for i in records} == {("POST", "127.0.0.1")}
    assert records[0]["path"] == "/console/login"
    assert records[2]["path"] == "/console/logout"
    text = orjson.dumps(records).decode()
    for secret in (WRITE_KEY, BROKER_KEY, GUESS):
        assert secret not in text
    # Kafka's audit topic holds the same records, keyed by the key's fingerprint.
    logged = kafka_records(harness, {i["id"] for i in records})
    assert [logged[i["id"]]["action"] for i in records] == [i["action"] for i in records]
    assert logged[records[0]["id"]]["kafka_key"] == writer
    assert logged[records[3]["id"]]["kafka_key"] == "-"


async def test_a_flood_of_failed_logins_is_throttled_and_its_records_bounded(
    start_harness: StartHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 tries per address, none back during the test; 5 failure records, then one per 2 s.
    monkeypatch.setenv("OTA_CONSOLE_LOGIN_FAILURE_BURST", "3")
    monkeypatch.setenv("OTA_CONSOLE_LOGIN_FAILURES_PER_MIN", "0.1")
    monkeypatch.setenv("OTA_CONSOLE_LOGIN_AUDIT_BURST", "5")
    monkeypatch.setenv("OTA_CONSOLE_LOGIN_AUDIT_PER_MIN", "30")
    harness = await start_harness()
    unrecorded_before = unrecorded_logins()
    flood = 200
    async with httpx.AsyncClient(base_url=harness.base_url, timeout=30) as attacker:
        started = time.monotonic()
        statuses = [await try_login(attacker, f"guess-{n:06d}-0000") for n in range(flood)]
        elapsed = time.monotonic() - started
        assert statuses == [401] * 3 + [429] * (flood - 3)
        # Throttled means the key is not looked at: the right one is refused too.
        form = await attacker.get("/console/login")
        token = CSRF.search(form.text)
        assert token is not None
        right = await attacker.post("/console/login", data={"csrf": token[1], "api_key": WRITE_KEY})
        assert right.status_code == 429
        assert int(right.headers["retry-after"]) > 500
        assert "Too many failed logins" in right.text
    attempts = flood + 1

    records = logins(await audit_trail(harness))
    assert len(records) <= 5 + int(elapsed / 2) + 1  # the budget, not the flood
    assert [i["status"] for i in records[:5]] == [401, 401, 401, 429, 429]

    # Nothing is lost: once a token is back, one record counts the failures that were not
    # recorded one by one (and the metric counts them too).
    late = 0

    async def summary() -> list[dict[str, Any]] | None:
        nonlocal late
        async with httpx.AsyncClient(base_url=harness.base_url, timeout=30) as another:
            assert await try_login(another, "late-guess-0000") == 429
        late += 1
        trail = logins(await audit_trail(harness))
        return trail if any(i["action"] == UNRECORDED for i in trail[-2:]) else None

    trail = await eventually(summary, "a record counting the unrecorded failures", 15)
    counts = [int(i["target"]["count"]) for i in trail if i["action"] == UNRECORDED]
    singles = [i for i in trail if i["action"] == "console_login"]
    assert len(singles) + sum(counts) == attempts + late
    assert unrecorded_logins() - unrecorded_before == sum(counts)
    last = next(i for i in reversed(trail) if i["action"] == UNRECORDED)
    assert (last["key_id"], last["client"], last["status"], last["outcome"]) == (
        None,
        None,
        429,
        "refused",
    )
    text = orjson.dumps(trail).decode()
    assert "guess-000000" not in text
    assert WRITE_KEY not in text
