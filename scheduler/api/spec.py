"""Endpoints declared once: each becomes a Starlette route and an OpenAPI 3 operation.

Pure data plus the OpenAPI document builder; handlers live in `routes`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scheduler.settings import Scope

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path or query
    description: str
    type: str = "string"
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    scope: Scope | None = Scope.READ  # None: open (health, metrics, docs)
    params: tuple[Param, ...] = ()
    body: str | None = None  # "json" with `schema`, "octet-stream" or "text"
    schema: dict[str, Any] | None = None
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "stable machine-readable code"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the request field at fault"},
            },
            "required": ["code", "message"],
        }
    },
}


def openapi(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "summary": e.summary,
            "tags": [e.tag],
            "operationId": f"{e.method.lower()}_{e.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": {"type": p.type},
                }
                for p in e.params
            ],
            "responses": {
                str(code): {"description": text} for code, text in sorted(e.responses.items())
            },
        }
        if e.scope is not None:
            op["security"] = [{"apiKey": [e.scope.value]}]
            op["responses"].setdefault("401", {"description": "missing or unknown API key"})
            op["responses"].setdefault("403", {"description": f"the key lacks the {e.scope} scope"})
        for code in ("400", "401", "403", "404", "409", "413", "422"):
            if code in op["responses"]:
                op["responses"][code]["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }
        if e.body == "json":
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": e.schema or {"type": "object"}}},
            }
        elif e.body == "octet-stream":
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        elif e.body == "text":
            op["requestBody"] = {
                "required": True,
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OTA rollout scheduler",
            "version": version,
            "description": "Packages, devices, upgrade tasks with waves and pacing, notifications.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (OTA_API_KEYS or created by POST /v1/keys): read, write or admin scope",
                }
            },
            "schemas": {"Error": ERROR_SCHEMA},
        },
    }
