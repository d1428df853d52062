"""HTTP handlers: parse the request, call a service, render JSON. Nothing else.

Every handler is wrapped by `app.guard`, which checks the API key's scope and turns
`SchedulerError`s into JSON error responses.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from ota.health import HEALTH
from ota.metrics import REGISTRY
from scheduler.api.docs_page import PAGE
from scheduler.devices import DeviceFilter, check_name
from scheduler.errors import BadRequest, NotFound, PayloadTooLarge, ValidationError
from scheduler.fields import Obj
from scheduler.packages import parse_meta
from scheduler.services import Services
from scheduler.signing import decode_signature
from scheduler.targets import MAX_IDS, check_ids
from scheduler.webhook_probe import send_test
from scheduler.webhooks import public as public_webhook

MAX_JSON_BYTES = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def svc(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def body_json(request: Request) -> Any:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"request body is over {MAX_JSON_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"request body is over {MAX_JSON_BYTES} bytes")
    if not raw:
        raise BadRequest("request body is empty; send a JSON object", code="empty_body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None


def int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(
            f"{name}={raw!r} is not an integer", code="wrong_type", field=name
        ) from None
    if not low <= value <= high:
        raise ValidationError(
            f"{name}={value} is out of range [{low}, {high}]", code="out_of_range", field=name
        )
    return value


def page(items: list[Any], cursor: object) -> JSON:
    return JSON({"items": items, "next_cursor": None if cursor is None else str(cursor)})


async def _stream(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


# ------------------------------------------------------------ open


async def healthz(request: Request) -> Response:
    await svc(request).redis.ping()
    return JSON({"status": "ok"})


async def livez(request: Request) -> Response:
    """200 while every loop's heartbeat is fresh (ota/health.py); a Redis outage is not
    a reason to restart."""
    verdict = HEALTH.live()
    return Response(verdict.body(), 200 if verdict.ok else 503, media_type="text/plain")


async def readyz(request: Request) -> Response:
    """Live, every consumer polled once, and Redis answers."""
    verdict = HEALTH.ready()
    if verdict.ok:
        await svc(request).redis.ping()
    return Response(verdict.body(), 200 if verdict.ok else 503, media_type="text/plain")


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return JSON(request.app.state.openapi)


async def docs(request: Request) -> Response:
    return HTMLResponse(PAGE)


# ------------------------------------------------------------ packages


async def upload_package(request: Request) -> Response:
    s = svc(request)
    meta = parse_meta(dict(request.query_params))
    raw_sig = request.headers.get("x-ota-signature")
    signature = decode_signature(raw_sig) if raw_sig else None
    s.packages.check_signature_header(signature)
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > s.settings.package_max_bytes:
        raise PayloadTooLarge(
            f"package is larger than the limit of {s.settings.package_max_bytes} bytes"
        )
    package, created = await s.packages.upload(meta, signature, _stream(request))
    return JSON(
        {**package.json(), "deduplicated": not created}, status_code=201 if created else 200
    )


async def list_packages(request: Request) -> Response:
    offset = int_query(request, "cursor", 0, 0, 10**9)
    limit = int_query(request, "limit", 100, 1, 1000)
    items, cursor = await svc(request).packages.page(offset=offset, limit=limit)
    return page([p.json() for p in items], cursor)


async def get_package(request: Request) -> Response:
    package = await svc(request).packages.get(request.path_params["package_id"])
    return JSON(package.json())


async def delete_package(request: Request) -> Response:
    await svc(request).packages.delete(request.path_params["package_id"])
    return Response(status_code=204)


async def origin(request: Request) -> Response:
    sha = request.path_params["sha256"]
    if not _SHA256.fullmatch(sha):
        raise ValidationError(
            "sha256 must be 64 lowercase hex digits", code="bad_sha256", field="sha256"
        )
    # With OTA_PACKAGE_STORE=s3 nothing is on this disk: the edges read the bucket.
    path = svc(request).blobs.local_path(sha)
    if path is None:
        raise NotFound(f"no package content with sha256 {sha} here", code="unknown_content")
    return FileResponse(path, media_type="application/octet-stream", headers={"ETag": f'"{sha}"'})


# ------------------------------------------------------------ devices and groups


def _filter(request: Request) -> DeviceFilter:
    q = request.query_params
    online_raw = q.get("online")
    if online_raw not in (None, "", "true", "false"):
        raise ValidationError(
            f"online={online_raw!r} must be true or false", code="bad_value", field="online"
        )
    return DeviceFilter(
        fw_versions=tuple(q.getlist("fw_version")),
        sw_versions=tuple(q.getlist("sw_version")),
        groups=tuple(check_name(g, "group", "group") for g in q.getlist("group")),
        tags=tuple(check_name(t, "tag", "tag") for t in q.getlist("tag")),
        online=None if not online_raw else online_raw == "true",
    )


async def list_devices(request: Request) -> Response:
    flt = _filter(request)
    limit = int_query(request, "limit", 100, 1, 1000)
    items, cursor = await svc(request).registry.page(
        flt, after=request.query_params.get("cursor", ""), limit=limit
    )
    return page(items, cursor)


async def get_device(request: Request) -> Response:
    return JSON(await svc(request).registry.show(request.path_params["device_id"]))


async def patch_device(request: Request) -> Response:
    device = check_ids([request.path_params["device_id"]], "device_id")[0]
    b = Obj(await body_json(request), "", frozenset({"groups", "tags"}))
    groups = b.strings("groups", max_items=100, max_len=64) if b.has("groups") else None
    tags = b.strings("tags", max_items=100, max_len=64) if b.has("tags") else None
    return JSON(await svc(request).registry.set_labels(device, groups, tags))


async def list_groups(request: Request) -> Response:
    return JSON({"items": await svc(request).registry.groups()})


async def create_group(request: Request) -> Response:
    b = Obj(await body_json(request), "", frozenset({"name"}))
    name = b.text("name", max_len=64)
    created = await svc(request).registry.create_group(name)
    return JSON({"name": name, "created": created}, status_code=201 if created else 200)


async def delete_group(request: Request) -> Response:
    await svc(request).registry.delete_group(request.path_params["name"])
    return Response(status_code=204)


async def change_group(request: Request) -> Response:
    b = Obj(await body_json(request), "", frozenset({"add", "remove"}))
    add = check_ids(b.array("add", [], max_items=MAX_IDS), "add")
    remove = check_ids(b.array("remove", [], max_items=MAX_IDS), "remove")
    if not add and not remove:
        raise ValidationError("give device ids to add or remove", code="empty_targets")
    name = request.path_params["name"]
    await svc(request).registry.change_group(name, add, remove)
    return JSON({"name": name, "added": len(add), "removed": len(remove)})


# ------------------------------------------------------------ tasks


async def upload_target_list(request: Request) -> Response:
    return JSON(await svc(request).tasks.upload_list(_stream(request)), status_code=201)


async def create_task(request: Request) -> Response:
    body = await body_json(request)
    if request.query_params.get("dry_run") == "true" and isinstance(body, dict):
        body["dry_run"] = True
    result, created = await svc(request).tasks.create(body)
    return JSON(result, status_code=201 if created else 200)


async def list_tasks(request: Request) -> Response:
    offset = int_query(request, "cursor", 0, 0, 10**9)
    limit = int_query(request, "limit", 50, 1, 500)
    items, cursor = await svc(request).tasks.page(
        status=request.query_params.get("status") or None, offset=offset, limit=limit
    )
    return page(items, cursor)


async def get_task(request: Request) -> Response:
    view = await svc(request).tasks.view(request.path_params["task_id"])
    return JSON(await svc(request).rollbacks.summary(view))


async def task_devices(request: Request) -> Response:
    limit = int_query(request, "limit", 100, 1, 1000)
    items, cursor = await svc(request).tasks.devices(
        request.path_params["task_id"],
        status=request.query_params.get("status") or None,
        after=request.query_params.get("cursor", ""),
        limit=limit,
    )
    return page(items, cursor)


async def pause_task(request: Request) -> Response:
    return JSON(await svc(request).tasks.pause(request.path_params["task_id"]))


async def resume_task(request: Request) -> Response:
    return JSON(await svc(request).tasks.resume(request.path_params["task_id"]))


async def cancel_task(request: Request) -> Response:
    return JSON(await svc(request).tasks.cancel(request.path_params["task_id"]))


async def retry_task(request: Request) -> Response:
    return JSON(await svc(request).tasks.retry(request.path_params["task_id"]))


async def rollback_task(request: Request) -> Response:
    body, status = await svc(request).rollbacks.request(request.path_params["task_id"])
    return JSON(body, status)


# ------------------------------------------------------------ webhooks


async def create_webhook(request: Request) -> Response:
    return JSON(await svc(request).webhooks.create(await body_json(request)), status_code=201)


async def list_webhooks(request: Request) -> Response:
    hooks = await svc(request).webhooks.all()
    return JSON({"items": [public_webhook(h) for h in hooks]})


async def rotate_webhook_secret(request: Request) -> Response:
    hid = request.path_params["webhook_id"]
    return JSON(await svc(request).webhooks.rotate(hid, await body_json(request)))


async def retire_webhook_secret(request: Request) -> Response:
    return JSON(await svc(request).webhooks.retire_previous(request.path_params["webhook_id"]))


async def delete_webhook(request: Request) -> Response:
    await svc(request).webhooks.delete(request.path_params["webhook_id"])
    return Response(status_code=204)


async def test_webhook(request: Request) -> Response:
    services = svc(request)
    hid = request.path_params["webhook_id"]
    timeout_s = services.settings.webhook_timeout_s
    return JSON(await send_test(services.redis, services.webhooks, hid, timeout_s))


async def webhook_deliveries(request: Request) -> Response:
    limit = int_query(request, "limit", 100, 1, 1000)
    items = await svc(request).webhooks.deliveries(request.path_params["webhook_id"], limit)
    return JSON({"items": items})


# ------------------------------------------------------------ audit


async def audit_log(request: Request) -> Response:
    limit = int_query(request, "limit", 100, 1, 1000)
    return JSON(await svc(request).audit.page(limit, request.query_params.get("cursor") or None))
