"""HTTP endpoints of stored API keys (scheduler/apikeys.py): create (the key shown once),
list, revoke; all need the admin scope, and `app.guard` audits creations and revocations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ota.clock import now_ms
from scheduler.api.routes import JSON, body_json, svc
from scheduler.api.spec import Endpoint, Param
from scheduler.settings import Scope

CREATE_BODY = {
    "type": "object",
    "required": ["name", "scopes"],
    "properties": {
        "name": {"type": "string", "maxLength": 64},
        "scopes": {
            "type": "array",
            "items": {"enum": ["read", "write", "admin"]},
            "minItems": 1,
            "description": "admin implies write, write implies read",
        },
    },
}


async def create_key(request: Request) -> Response:
    created = await svc(request).api_keys.create(await body_json(request), now_ms())
    return JSON(created, status_code=201, headers={"Cache-Control": "no-store"})


async def list_keys(request: Request) -> Response:
    return JSON({"items": await svc(request).api_keys.all()})


async def revoke_key(request: Request) -> Response:
    return JSON(await svc(request).api_keys.revoke(request.path_params["key_id"]))


def endpoints() -> list[Endpoint]:
    e, admin = Endpoint, Scope.ADMIN
    return [
        e(
            "POST",
            "/v1/keys",
            create_key,
            "Create an API key: the answer's `key` is shown this once, only its hash is kept",
            "keys",
            admin,
            body="json",
            schema=CREATE_BODY,
            responses={201: "created", 422: "invalid"},
        ),
        e("GET", "/v1/keys", list_keys, "List stored API keys (never the keys)", "keys", admin),
        e(
            "DELETE",
            "/v1/keys/{key_id}",
            revoke_key,
            "Revoke a stored API key: refused from the next request on",
            "keys",
            admin,
            (Param("key_id", "path", "the key's id"),),
            responses={200: "revoked", 404: "unknown key"},
        ),
    ]
