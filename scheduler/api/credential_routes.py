"""HTTP handlers and declarations for device credentials and the broker's authentication call.

Handlers parse the request, call `Services.credentials`, render JSON (or CSV for imports);
`app.guard` checks scopes and renders errors, as for every other route. Reading a device's
credential status needs the read scope; registering, rotating, disabling, enabling,
deleting and importing need the admin scope: who may let a device in is an admin decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ota.clock import now_ms
from ota.device_auth import CHAIN_VERDICTS, Reason
from ota.metrics import counter
from scheduler import broker_request
from scheduler.api.routes import JSON, svc
from scheduler.api.spec import Endpoint, Param
from scheduler.credential_import import run_import
from scheduler.credentials import check_device, check_secret
from scheduler.errors import BadRequest, PayloadTooLarge, ValidationError
from scheduler.settings import Scope as KeyScope

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024  # a secret, or the broker's short strings (no certificate PEM)
AUTH = counter(
    "scheduler",
    "broker_auth_total",
    "Device connections the broker asked about, by result and reason",
    ("result", "reason"),
)
# Label children resolved once: this endpoint runs on every device connect.
_AUTH_COUNT = {r: AUTH.labels("allow" if r is Reason.OK else "deny", r.value) for r in Reason}


async def _small_json(request: Request, *, optional: bool) -> Any:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body is over {MAX_BODY_BYTES} bytes")
    if not raw and optional:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None


async def _secret_body(request: Request) -> str | None:
    """The optional `{"secret": ...}` body of register and rotate (absent: generate one)."""
    body = await _small_json(request, optional=True)
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object", code="wrong_type")
    unknown = sorted(set(body) - {"secret"})
    if unknown:
        raise ValidationError(
            f"unknown field {unknown[0]!r}", code="unknown_field", field=unknown[0]
        )
    secret = body.get("secret")
    return None if secret is None else check_secret(secret)


def _device(request: Request) -> str:
    return check_device(request.path_params["device_id"])


def _issued(status: dict[str, Any], secret: str, given: str | None) -> dict[str, Any]:
    # A generated secret is shown here once; a given one is not echoed back.
    return {**status, "secret": secret} if given is None else status


async def register(request: Request) -> Response:
    device = _device(request)
    given = await _secret_body(request)
    status, secret = await svc(request).credentials.register(device, given)
    return JSON(_issued(status, secret, given), status_code=201)


async def rotate(request: Request) -> Response:
    device = _device(request)
    given = await _secret_body(request)
    status, secret = await svc(request).credentials.rotate(device, given)
    return JSON(_issued(status, secret, given))


async def disable(request: Request) -> Response:
    return JSON(await svc(request).credentials.set_enabled(_device(request), False))


async def enable(request: Request) -> Response:
    return JSON(await svc(request).credentials.set_enabled(_device(request), True))


async def delete(request: Request) -> Response:
    await svc(request).credentials.delete(_device(request))
    return Response(status_code=204)


async def show(request: Request) -> Response:
    return JSON(await svc(request).credentials.status(_device(request)))


class ConcurrentStream(Response):
    """A 200 response written while its producer still reads the request body.

    The producer runs in its own task and hands chunks over through an unbounded queue,
    so it never waits for the client to read: a client that sends the whole body before
    reading the response (httpx, requests) cannot deadlock it, at the cost of holding the
    unread report in memory. Starlette's StreamingResponse cannot be used here: on ASGI
    spec 2.3 (uvicorn) it listens for a disconnect on `receive`, taking the body's chunks.
    """

    def __init__(
        self, produce: Callable[[Callable[[bytes], None]], Awaitable[None]], media_type: str
    ) -> None:
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({"cache-control": "no-store"})  # it carries secrets
        self._produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await self._produce(queue.put_nowait)
            except ClientDisconnect:
                log.info("a client went away during a credentials import")
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            done = False
            while not done:
                parts = [await queue.get()]
                while not queue.empty():
                    parts.append(queue.get_nowait())
                done = parts[-1] is None
                body = b"".join(p for p in parts if p is not None)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # re-raises the producer's failure (after the report says so)


async def import_credentials(request: Request) -> Response:
    credentials = svc(request).credentials

    async def body() -> Any:
        async for chunk in request.stream():
            if chunk:
                yield chunk

    async def produce(emit: Callable[[bytes], None]) -> None:
        await run_import(credentials, body(), emit)

    return ConcurrentStream(produce, "text/csv")


async def broker_authenticate(request: Request) -> Response:
    asked = broker_request.parse(await _small_json(request, optional=False))
    decision = await svc(request).credentials.verify(
        asked.client_id, asked.username, asked.password, now_ms(), asked.certificate
    )
    _AUTH_COUNT[decision.reason].inc()
    if not decision.allowed:
        certificate = asked.certificate
        log.debug(
            "denied %s from %s: %s%s",
            decision.device_id,
            asked.peerhost,
            decision.reason,
            f" (certificate {certificate.fingerprint or certificate.names})" if certificate else "",
        )
    return Response(
        orjson.dumps(
            {
                "result": "allow" if decision.allowed else "deny",
                "is_superuser": False,
                "reason": decision.reason.value,
                "device_id": decision.device_id,
            }
        ),
        media_type="application/json",
    )


DEVICE = Param("device_id", "path", "device id")
SECRET_BODY = {
    "type": "object",
    "properties": {
        "secret": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{8,32}$",
            "description": "absent: the platform generates one and returns it once",
        }
    },
}


def endpoints() -> list[Endpoint]:
    e = Endpoint
    # Letting a device in (or changing how it proves itself) is an admin decision.
    r, admin = KeyScope.READ, KeyScope.ADMIN
    path = "/v1/devices/{device_id}/credentials"
    return [
        e(
            "POST",
            path,
            register,
            "Register a device's secret (given, or generated and returned once)",
            "credentials",
            admin,
            (DEVICE,),
            body="json",
            schema=SECRET_BODY,
            responses={201: "registered", 409: "already registered", 422: "invalid"},
        ),
        e(
            "GET",
            path,
            show,
            "A device's credential status (never the secret)",
            "credentials",
            r,
            (DEVICE,),
            responses={200: "OK", 404: "no credentials", 422: "bad device id"},
        ),
        e(
            "DELETE",
            path,
            delete,
            "Delete a device's credentials (it can no longer connect)",
            "credentials",
            admin,
            (DEVICE,),
            responses={204: "deleted", 404: "no credentials", 422: "bad device id"},
        ),
        e(
            "POST",
            f"{path}/rotate",
            rotate,
            "Replace a device's secret (given, or generated and returned once)",
            "credentials",
            admin,
            (DEVICE,),
            body="json",
            schema=SECRET_BODY,
            responses={200: "rotated", 404: "no credentials", 422: "invalid"},
        ),
        *(
            e(
                "POST",
                f"{path}/{op}",
                handler,
                summary,
                "credentials",
                admin,
                (DEVICE,),
                responses={200: "OK", 404: "no credentials", 422: "bad device id"},
            )
            for op, handler, summary in (
                ("disable", disable, "Refuse the device's connections until enabled"),
                ("enable", enable, "Accept the device's connections again"),
            )
        ),
        e(
            "POST",
            "/v1/credentials/import",
            import_credentials,
            "Bulk import: lines `device_id[,secret]` in; CSV of generated secrets and refused "
            "lines out, streamed",
            "credentials",
            admin,
            body="text",
            responses={200: "text/csv report, ending with a '# registered' or '# aborted' line"},
        ),
        e(
            "POST",
            "/v1/broker/authenticate",
            broker_authenticate,
            "The broker's check of a connecting device (EMQX HTTP authentication; a client "
            "certificate's facts in the cert_ fields, scheduler/broker_request.py)",
            "broker",
            KeyScope.BROKER,
            body="json",
            schema={
                "type": "object",
                "required": list(broker_request.REQUIRED),
                "properties": {
                    "clientid": {"type": "string"},
                    "username": {"type": ["string", "null"]},
                    "password": {"type": ["string", "null"]},
                    "peerhost": {"type": "string"},
                    "cert_common_name": {"type": ["string", "null"]},
                    "cert_subject": {"type": ["string", "null"]},
                    "cert_names": {"type": ["array", "null"], "items": {"type": "string"}},
                    "cert_fingerprint": {"type": ["string", "null"]},
                    "cert_check": {
                        "type": ["string", "null"],
                        "enum": [*(r.value for r in CHAIN_VERDICTS), None],
                    },
                },
            },
            responses={
                200: '{"result": "allow"|"deny", "is_superuser": false, "reason", "device_id"}',
                400: "unreadable",
                422: "a field is missing or not a string",
            },
        ),
    ]
