"""Retry rules through the live scheduler: a bad rule is refused naming the cause and field
and creates nothing; a task's rules (from the API or `ota tasks create --retry`) are shown
in its policy and reach the workers in every released job spec; the OpenAPI document
declares them from the policy's one definition."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ota.records import RetryRule
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness
from tests.integration.scheduler.test_sched_cli import ota

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

RULES = {
    "offline": {"count": 5, "interval_min": 10, "factor": 2, "max_interval_min": 120},
    "device_busy": {"count": 0},
}
RELEASED = (
    RetryRule("device_busy", 0, 0, 1.0, 86_400),
    RetryRule("offline", 5, 600, 2.0, 7_200),
)


def devices(n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"rr-{run}-{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("rules", "code", "field", "says"),
    [
        (
            {"low_batery": {"count": 1}},
            "unknown_field",
            "policy.retry_rules.low_batery",
            "names no failure cause or cause class",
        ),
        ({"offline": {"count": 9}}, "out_of_range", "policy.retry_rules.offline.count", "[0, 5]"),
        (
            {"timeout": {"count": 1, "interval_min": 30, "max_interval_min": 5}},
            "out_of_range",
            "policy.retry_rules.timeout.max_interval_min",
            "below interval_min=30",
        ),
    ],
)
async def test_a_bad_rule_is_refused_and_creates_nothing(
    harness: Harness, rules: dict[str, Any], code: str, field: str, says: str
) -> None:
    package = await harness.upload(b"retry-rules-bad")
    response = await harness.client.post(
        "/v1/tasks",
        json={
            "type": "firmware",
            "package_id": package["id"],
            "targets": {"device_ids": devices(1)},
            "policy": {"retry_rules": rules},
        },
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert says in error["message"]
    assert (await harness.client.get("/v1/tasks")).json()["items"] == []
    assert await harness.releases() == []


async def test_rules_reach_every_released_job_spec(harness: Harness) -> None:
    package = await harness.upload(b"retry-rules-api")
    targets = devices(2)
    tid = await harness.create_task(package["id"], targets, retry_count=1, retry_rules=RULES)
    task = await harness.task(tid)
    assert task["policy"]["retry_rules"] == {
        "device_busy": {"count": 0, "interval_min": 0, "factor": 1.0, "max_interval_min": 1440},
        "offline": {**RULES["offline"], "factor": 2.0},
    }
    released = await harness.wait_releases(2)
    assert {r.device_id for r in released} == set(targets)
    assert all(r.job.retry_rules == RELEASED and r.job.retry_count == 1 for r in released)


async def test_the_cli_sets_rules_with_retry(harness: Harness) -> None:
    package = await harness.upload(b"retry-rules-cli")
    code, out, err = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", package["id"],
        "--devices", ",".join(devices(1)),
        "--retry", "offline=5:10:2:120", "--retry", "device_busy=never",
    )  # fmt: skip
    assert code == 0, err
    tid = out.split()[2]
    [released] = await harness.wait_releases(1)
    assert released.job.task_id == tid
    assert released.job.retry_rules == RELEASED
    code, _, err = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", package["id"],
        "--devices", "a", "--retry", "offline=often",
    )  # fmt: skip
    assert code != 0
    assert "--retry 'offline=often'" in err


async def test_openapi_declares_the_rules(harness: Harness) -> None:
    doc = (await harness.anon.get("/v1/openapi.json")).json()
    body = doc["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    rules = body["schema"]["properties"]["policy"]["properties"]["retry_rules"]
    assert rules["additionalProperties"] is False
    classes = {"offline", "timeout", "device_error", "platform_error"}
    assert classes | {"low_battery", "signature_check_failed"} <= set(rules["properties"])
    offline = rules["properties"]["offline"]
    assert offline["required"] == ["count"]
    assert offline["properties"]["count"]["maximum"] == 5
