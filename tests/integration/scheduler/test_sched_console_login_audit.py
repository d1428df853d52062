"""Console logins and logouts in the audit trail (scheduler/console/pages_auth.py), in Redis
and Kafka's audit topic, never with the key; a flood of failed logins is throttled per
address (scheduler/console/login_guard.py) and writes at most the audit budget for refused
unauthenticated attempts (scheduler/audit_budget.py), with every failure told."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
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
UNRECORDED = "unrecorded_failures"


async def try_login(browser: httpx.AsyncClient, key: str, csrf: str | None = None) -> int:
    """A login from a fresh form as a browser sends it (the form's cookie stays in
    `browser`); `csrf` replaces the form's token."""
    form = await browser.get("/console/login")
    token = CSRF.search(form.text)
    assert token is not None, form.text
    data = {"csrf": csrf or token[1], "api_key": key}
    return (await browser.post("/console/login", data=data)).status_code


def logins(trail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in trail if i["route"] in ("/console/login", "/console/logout", "-")]


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


def unrecorded() -> float:
    """Refused unauthenticated attempts counted, not recorded one by one."""
    return REGISTRY.get_sample_value("ota_scheduler_audit_unrecorded_total") or 0.0


async def every_failure_told(
    harness: Harness,
    attempts: int,
    unrecorded_before: float,
    one_more: Callable[[], Awaitable[Any]],
) -> list[dict[str, Any]]:
    """After a flood of `attempts` refused attempts (the only records in the trail), sends
    one more at a time until one writes a record: a token was back, so its records told
    every failure still untold. Checks that records and counts add up to every attempt,
    as the metric does, and returns the trail (oldest first).

    A count record in the trail is not enough: one written while the flood went on (a
    token back mid-flood, as under load) leaves the failures after it untold."""
    late = 0
    told = len(await audit_trail(harness))
    assert told < 100  # audit_trail reads one page (GET /v1/audit's default 100): all of it

    async def counted() -> list[dict[str, Any]] | None:
        nonlocal late
        await one_more()  # the API and the console record a failure before answering
        late += 1
        trail = await audit_trail(harness)
        return trail if len(trail) > told else None

    trail = await eventually(counted, "a record counting the unrecorded failures", 15)
    counts = [int(i["target"]["count"]) for i in trail if i["action"] == UNRECORDED]
    singles = [i for i in trail if i["action"] != UNRECORDED]
    assert len(singles) + sum(counts) == attempts + late
    assert unrecorded() - unrecorded_before == sum(counts)
    last = next(i for i in reversed(trail) if i["action"] == UNRECORDED)
    assert (last["key_id"], last["client"], last["route"], last["status"]) == (None, None, "-", 429)
    return trail


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
    harness = await start_harness(OTA_AUDIT_FAILURES_BURST="5", OTA_AUDIT_FAILURES_PER_MIN="30")
    unrecorded_before = unrecorded()
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

    async def one_more() -> None:
        async with httpx.AsyncClient(base_url=harness.base_url, timeout=30) as another:
            assert await try_login(another, "late-guess-0000") == 429  # the same address

    trail = await every_failure_told(harness, attempts, unrecorded_before, one_more)
    text = orjson.dumps(trail).decode()
    assert "guess-000000" not in text
    assert WRITE_KEY not in text
