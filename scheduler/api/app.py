"""The Starlette application: endpoints, API-key scopes, errors as JSON, the OpenAPI document.

Starlette because it is small, typed, runs on uvicorn with uvloop and httptools, and
streams request bodies (package uploads are never buffered whole); the OpenAPI
document is generated from the `Endpoint` declarations rather than docstrings.
"""

from __future__ import annotations

import functools
import logging

from kafka.errors import KafkaError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scheduler import audit
from scheduler.api import (
    credential_routes,
    device_ca_routes,
    dry_run_routes,
    history_routes,
    key_routes,
)
from scheduler.api import routes as h
from scheduler.api.spec import Endpoint, Handler, Param, openapi
from scheduler.apikeys import ApiKeys, Principal
from scheduler.console import app as console
from scheduler.errors import Forbidden, SchedulerError, Unauthorized
from scheduler.policy_schema import POLICY, json_schema
from scheduler.services import Services
from scheduler.settings import Scope

log = logging.getLogger(__name__)
W, R = Scope.WRITE, Scope.READ
LIMIT = Param("limit", "query", "page size", "integer")
CURSOR = Param("cursor", "query", "next_cursor of the previous page")
TASK = Param("task_id", "path", "task id")
HOOK = Param("webhook_id", "path", "webhook id")


def endpoints() -> list[Endpoint]:
    e = Endpoint
    return [
        e("GET", "/healthz", h.healthz, "Liveness and Redis reachability", "ops", None),
        e("GET", "/livez", h.livez, "Liveness: every loop's heartbeat is fresh", "ops", None),
        e("GET", "/readyz", h.readyz, "Readiness: live, consumers polling, Redis", "ops", None),
        e("GET", "/metrics", h.metrics, "Prometheus metrics", "ops", None),
        e("GET", "/v1/openapi.json", h.openapi_json, "This OpenAPI document", "ops", None),
        e("GET", "/docs", h.docs, "Interactive API page", "ops", None),
        e(
            "POST",
            "/v1/packages",
            h.upload_package,
            "Upload a package (raw body; metadata in the query; optional X-OTA-Signature)",
            "packages",
            W,
            (
                Param("type", "query", "firmware or software", required=True),
                Param("version", "query", "target version", required=True),
                Param("file_name", "query", "file name sent to devices", required=True),
                Param("product", "query", "product or device type"),
                Param("allowed_sources", "query", "comma-separated source versions (max 20)"),
                Param("custom_info", "query", "free text for devices"),
                Param("description", "query", "free text for operators"),
                Param("X-OTA-Signature", "header", "base64 detached signature"),
            ),
            body="octet-stream",
            responses={
                201: "stored",
                200: "same content and metadata already stored",
                413: "too large",
                422: "invalid",
            },
        ),
        e("GET", "/v1/packages", h.list_packages, "List packages", "packages", R, (CURSOR, LIMIT)),
        e(
            "GET",
            "/v1/packages/{package_id}",
            h.get_package,
            "Get a package",
            "packages",
            R,
            (Param("package_id", "path", "package id"),),
            responses={200: "OK", 404: "unknown package"},
        ),
        e(
            "DELETE",
            "/v1/packages/{package_id}",
            h.delete_package,
            "Delete a package (refused while an unfinished task uses it)",
            "packages",
            W,
            (Param("package_id", "path", "package id"),),
            responses={204: "deleted", 404: "unknown package", 409: "in use"},
        ),
        e(
            "GET",
            "/v1/origin/sha256/{sha256}",
            h.origin,
            "Package bytes for download edges (Range supported)",
            "packages",
            R,
            (Param("sha256", "path", "content hash"),),
            responses={200: "bytes", 206: "range", 404: "unknown content"},
        ),
        e(
            "GET",
            "/v1/devices",
            h.list_devices,
            "List devices, filtered by version, group, tag, online",
            "devices",
            R,
            (
                Param("fw_version", "query", "repeatable"),
                Param("sw_version", "query", "repeatable"),
                Param("group", "query", "repeatable"),
                Param("tag", "query", "repeatable"),
                Param("online", "query", "true or false", "boolean"),
                CURSOR,
                LIMIT,
            ),
        ),
        e(
            "GET",
            "/v1/devices/{device_id}",
            h.get_device,
            "A device with its current job and timeline",
            "devices",
            R,
            (Param("device_id", "path", "device id"),),
            responses={200: "OK", 404: "unknown device"},
        ),
        e(
            "PATCH",
            "/v1/devices/{device_id}",
            h.patch_device,
            "Set a device's groups and/or tags",
            "devices",
            W,
            (Param("device_id", "path", "device id"),),
            body="json",
            schema={
                "type": "object",
                "properties": {
                    "groups": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            },
            responses={200: "OK", 422: "invalid"},
        ),
        e("GET", "/v1/groups", h.list_groups, "List groups with sizes", "devices", R),
        e(
            "POST",
            "/v1/groups",
            h.create_group,
            "Create a group",
            "devices",
            W,
            body="json",
            schema={"type": "object", "properties": {"name": {"type": "string"}}},
            responses={201: "created", 200: "exists", 422: "invalid"},
        ),
        e(
            "DELETE",
            "/v1/groups/{name}",
            h.delete_group,
            "Delete a group",
            "devices",
            W,
            (Param("name", "path", "group"),),
            responses={204: "deleted", 404: "unknown group"},
        ),
        e(
            "POST",
            "/v1/groups/{name}/devices",
            h.change_group,
            "Add and remove devices of a group (up to 30,000 each)",
            "devices",
            W,
            (Param("name", "path", "group"),),
            body="json",
            schema={
                "type": "object",
                "properties": {
                    "add": {"type": "array", "items": {"type": "string"}},
                    "remove": {"type": "array", "items": {"type": "string"}},
                },
            },
            responses={200: "OK", 404: "unknown group", 422: "invalid"},
        ),
        e(
            "POST",
            "/v1/target-lists",
            h.upload_target_list,
            "Upload a device-id list (one per line) for targets over 30,000",
            "tasks",
            W,
            body="text",
            responses={201: "stored for 24 h", 400: "bad line", 422: "invalid"},
        ),
        e(
            "POST",
            "/v1/tasks",
            h.create_task,
            "Create an upgrade task, or judge its targets with dry_run",
            "tasks",
            W,
            (Param("dry_run", "query", "true: counts and lists, nothing created", "boolean"),),
            body="json",
            schema=TASK_SCHEMA,
            responses={
                201: "created",
                200: "dry run: counts and dry_run_id",
                400: "unreadable",
                422: "invalid",
            },
        ),
        e(
            "GET",
            "/v1/tasks",
            h.list_tasks,
            "List tasks, newest first",
            "tasks",
            R,
            (Param("status", "query", "task status"), CURSOR, LIMIT),
        ),
        e(
            "GET",
            "/v1/tasks/{task_id}",
            h.get_task,
            "A task with counts, failure causes, progress and waves",
            "tasks",
            R,
            (TASK,),
            responses={200: "OK", 404: "unknown task"},
        ),
        e(
            "GET",
            "/v1/tasks/{task_id}/devices",
            h.task_devices,
            "Devices of a task by status or state",
            "tasks",
            R,
            (TASK, Param("status", "query", "IoTDA status or job state"), CURSOR, LIMIT),
            responses={200: "OK", 404: "unknown task", 422: "bad status"},
        ),
        *(
            e(
                "POST",
                f"/v1/tasks/{{task_id}}/{op}",
                handler,
                summary,
                "tasks",
                W,
                (TASK,),
                responses={200: "OK", 404: "unknown task", 409: "not allowed in this status"},
            )
            for op, handler, summary in (
                ("pause", h.pause_task, "Pause releasing devices"),
                ("resume", h.resume_task, "Resume (approves the next wave after a wave pause)"),
                ("cancel", h.cancel_task, "Cancel: unstarted devices never start"),
                ("retry", h.retry_task, "Re-run Fail, FailWaitRetry and Stopped devices"),
            )
        ),
        e(
            "POST",
            "/v1/tasks/{task_id}/rollback",
            h.rollback_task,
            "Roll back the devices the task upgraded to its policy.rollback_package_id: a "
            "linked task. A running task is stopped first and its rollback starts once its "
            "devices finish (202); a second request answers the same rollback (200)",
            "tasks",
            W,
            (TASK,),
            responses={
                200: "the task's existing rollback",
                201: "rollback task created",
                202: "accepted: starts once the task's devices have finished",
                404: "unknown task",
                409: "no rollback package, nothing to roll back, or the rollback was refused",
            },
        ),
        e(
            "POST",
            "/v1/webhooks",
            h.create_webhook,
            "Register a webhook",
            "webhooks",
            W,
            body="json",
            schema={
                "type": "object",
                "required": ["url", "secret"],
                "properties": {
                    "url": {"type": "string"},
                    "secret": {"type": "string", "minLength": 16},
                    "events": {
                        "type": "array",
                        "items": {"enum": ["task_status", "device_result"]},
                    },
                    "task_id": {"type": "string"},
                },
            },
            responses={201: "created", 422: "invalid"},
        ),
        e("GET", "/v1/webhooks", h.list_webhooks, "List webhooks", "webhooks", R),
        e(
            "DELETE",
            "/v1/webhooks/{webhook_id}",
            h.delete_webhook,
            "Delete a webhook",
            "webhooks",
            W,
            (HOOK,),
            responses={204: "deleted", 404: "unknown webhook"},
        ),
        e(
            "POST",
            "/v1/webhooks/{webhook_id}/secret",
            h.rotate_webhook_secret,
            "Rotate the signing secret: the new one and the current one both sign until retired",
            "webhooks",
            W,
            (HOOK,),
            body="json",
            schema={
                "type": "object",
                "required": ["secret"],
                "properties": {"secret": {"type": "string", "minLength": 16}},
            },
            responses={
                200: "rotating",
                404: "unknown webhook",
                409: "a rotation is in progress",
                422: "invalid",
            },
        ),
        e(
            "DELETE",
            "/v1/webhooks/{webhook_id}/previous-secret",
            h.retire_webhook_secret,
            "End a rotation: only the new secret signs",
            "webhooks",
            W,
            (HOOK,),
            responses={200: "OK", 404: "unknown webhook"},
        ),
        e(
            "POST",
            "/v1/webhooks/{webhook_id}/test",
            h.test_webhook,
            "Send one signed test event now (no retry), logged as a delivery of kind test",
            "webhooks",
            W,
            (HOOK,),
            responses={200: "the attempt: status_code or error, ok", 404: "unknown webhook"},
        ),
        e(
            "GET",
            "/v1/webhooks/{webhook_id}/deliveries",
            h.webhook_deliveries,
            "A webhook's delivery log, newest first",
            "webhooks",
            R,
            (HOOK, LIMIT),
            responses={200: "OK", 404: "unknown webhook"},
        ),
        e(
            "GET",
            "/v1/audit",
            h.audit_log,
            "The audit trail of write requests (who, what, when, from where), newest first",
            "audit",
            R,
            (CURSOR, LIMIT),
            responses={200: "OK", 422: "bad cursor"},
        ),
        *credential_routes.endpoints(),
        *device_ca_routes.endpoints(),
        *dry_run_routes.endpoints(),
        *history_routes.endpoints(),
        *key_routes.endpoints(),
    ]


_NAMES = {"type": "array", "items": {"type": "string"}}
TASK_SCHEMA = {
    "type": "object",
    "required": ["type", "package_id", "targets"],
    "properties": {
        "name": {"type": "string"},
        "type": {"enum": ["firmware", "software"]},
        "package_id": {"type": "string"},
        "dry_run": {"type": "boolean"},
        "targets": {
            "type": "object",
            "properties": {
                "device_ids": {**_NAMES, "maxItems": 30000},
                "groups": _NAMES,
                "list_id": {"type": "string"},
                "filter": {
                    "type": "object",
                    "properties": {
                        "fw_versions": _NAMES,
                        "sw_versions": _NAMES,
                        "groups": _NAMES,
                        "tags": _NAMES,
                        "online": {"type": "boolean"},
                    },
                },
            },
        },
        "policy": json_schema(POLICY),
    },
}


# What a refusal adds for scopes whose reach is not obvious from their name.
_NEEDS = {
    Scope.ADMIN: ": API keys, device credentials and device CAs need an admin key",
}


def _bearer(request: Request) -> str | None:
    kind, _, token = request.headers.get("authorization", "").partition(" ")
    return token if kind.lower() == "bearer" and token else None


async def _authorize(keys: ApiKeys, request: Request, scope: Scope) -> Principal:
    token = _bearer(request)
    if token is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    principal = await keys.identify(token)
    if principal is None:
        raise Unauthorized("unknown API key")
    request.state.principal = principal  # for the audit record, whatever the answer
    if scope not in principal.scopes:
        raise Forbidden(f"this API key lacks the {scope.value} scope{_NEEDS.get(scope, '')}")
    return principal


def guard(endpoint: Endpoint, keys: ApiKeys) -> Handler:
    audited = endpoint.scope in (Scope.WRITE, Scope.ADMIN) and endpoint.method != "GET"

    @functools.wraps(endpoint.handler)
    async def guarded(request: Request) -> Response:
        response = await _answer(endpoint, keys, request)
        if audited:
            await _audit(endpoint, request, response)
        return response

    return guarded


async def _answer(endpoint: Endpoint, keys: ApiKeys, request: Request) -> Response:
    try:
        if endpoint.scope is not None:
            await _authorize(keys, request, endpoint.scope)
        return await endpoint.handler(request)
    except SchedulerError as exc:
        return h.JSON(exc.body(), status_code=exc.status)
    except (RedisError, KafkaError) as exc:
        log.exception("backing store unavailable")
        return h.JSON(
            {"error": {"code": "unavailable", "message": f"backing store unavailable: {exc}"}},
            status_code=503,
        )


async def _audit(endpoint: Endpoint, request: Request, response: Response) -> None:
    """Records a write- or admin-scope request in the audit trail (scheduler/audit.py)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    record = audit.exchange(
        request,
        response,
        key_id=principal.key_id if principal is not None else None,
        action=endpoint.handler.__name__,
        route=endpoint.path,
    )
    audit_log = h.svc(request).audit
    if response.status_code == 401:  # no known key: anyone can send these
        await audit_log.record_failure(record)
    else:
        await audit_log.record(record)


def build_app(services: Services, version: str = "1") -> Starlette:
    declared = endpoints()
    by_path: dict[str, dict[str, Handler]] = {}
    for endpoint in declared:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = guard(endpoint, services.api_keys)

    def dispatcher(methods: dict[str, Handler]) -> Handler:
        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await methods[method](request)

        return dispatch

    routes = [
        Route(path, dispatcher(methods), methods=list(methods)) for path, methods in by_path.items()
    ]
    app = Starlette(routes=[*routes, *console.mount(services)])  # the console: /console
    app.state.services = services
    app.state.openapi = openapi(declared, version)
    return app
