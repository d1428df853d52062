"""ops.rollout_api against a fake API (httpx.MockTransport): what each call sends, the id
it returns, and a refusal raised with the API's answer."""

from __future__ import annotations

import json

import httpx
import pytest

from ops.rollout_api import RolloutApiError, create_task, upload_package, upload_targets


def api(answer: httpx.Response, seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    return httpx.AsyncClient(base_url="http://api", transport=httpx.MockTransport(handle))


async def test_a_package_is_firmware_2_0_unless_told_otherwise() -> None:
    seen: list[httpx.Request] = []
    async with api(httpx.Response(201, json={"id": "p1"}), seen) as client:
        assert await upload_package(client, b"bits", "fw.bin", allowed_sources="1.0") == "p1"
    (request,) = seen
    assert request.url.path == "/v1/packages"
    assert dict(request.url.params) == {
        "type": "firmware",
        "version": "2.0",
        "file_name": "fw.bin",
        "allowed_sources": "1.0",
    }
    assert request.content == b"bits"


async def test_targets_are_one_id_a_line() -> None:
    seen: list[httpx.Request] = []
    async with api(httpx.Response(201, json={"list_id": "l1"}), seen) as client:
        assert await upload_targets(client, ["a", "b"]) == "l1"
    assert seen[0].url.path == "/v1/target-lists"
    assert seen[0].content == b"a\nb"


async def test_a_task_leaves_out_what_it_is_not_given() -> None:
    seen: list[httpx.Request] = []
    async with api(httpx.Response(201, json={"id": "t1"}), seen) as client:
        assert await create_task(client, "p1", "l1") == "t1"
        assert await create_task(client, "p1", "l1", {"rate_per_min": 5}, "named") == "t1"
    bare, full = (json.loads(r.content) for r in seen)
    assert bare == {"type": "firmware", "package_id": "p1", "targets": {"list_id": "l1"}}
    assert full == {**bare, "name": "named", "policy": {"rate_per_min": 5}}


@pytest.mark.parametrize("status", [200, 422])
async def test_a_task_not_created_raises_with_the_answer(status: int) -> None:
    async with api(httpx.Response(status, text="no such package"), []) as client:
        with pytest.raises(RolloutApiError, match=f"creating the task: {status} no such package"):
            await create_task(client, "p1", "l1")
