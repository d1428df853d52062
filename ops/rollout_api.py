"""The API calls a scripted rollout starts with (the demo, the benchmarks, fault runs): a
firmware package uploaded, a fleet's device ids made a target list, a task created over
that list. Each returns the id the API gave; an answer other than the one expected raises
`RolloutApiError` with the status and the API's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class RolloutApiError(RuntimeError):
    """The API refused a call; the message names the call, its status and the answer."""


def _id(response: httpx.Response, what: str, key: str, expected: tuple[int, ...]) -> str:
    if response.status_code not in expected:
        raise RolloutApiError(f"{what}: {response.status_code} {response.text[:500]}")
    found: str = response.json()[key]
    return found


async def upload_package(
    api: httpx.AsyncClient, content: bytes, file_name: str, **params: str
) -> str:
    """A firmware package, version 2.0 unless `params` say otherwise (201 new, 200 known)."""
    response = await api.post(
        "/v1/packages",
        params={"type": "firmware", "version": "2.0", "file_name": file_name, **params},
        content=content,
    )
    return _id(response, "uploading the package", "id", (200, 201))


async def upload_targets(api: httpx.AsyncClient, device_ids: list[str]) -> str:
    response = await api.post("/v1/target-lists", content="\n".join(device_ids).encode())
    return _id(response, "uploading the target list", "list_id", (200, 201))


async def create_task(
    api: httpx.AsyncClient,
    package_id: str,
    list_id: str,
    policy: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """A firmware task over a target list; the API's default policy where `policy` is None."""
    body: dict[str, Any] = {
        "type": "firmware",
        "package_id": package_id,
        "targets": {"list_id": list_id},
    }
    if name is not None:
        body["name"] = name
    if policy is not None:
        body["policy"] = dict(policy)
    return _id(await api.post("/v1/tasks", json=body), "creating the task", "id", (201,))
