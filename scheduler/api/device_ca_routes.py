"""HTTP handlers and declarations for device CAs (X.509 device authentication) and a
device's authentication method.

    POST   /v1/device-cas                      PEM of one CA certificate in, its summary out
    GET    /v1/device-cas                      the registered CAs (fingerprint, subject, dates)
    DELETE /v1/device-cas/{fingerprint}        remove one
    POST   /v1/devices/{device_id}/credentials/auth   {"auth": "secret"|"certificate"|"any"}
    POST   /v1/devices/{device_id}/credentials/certificate   register a certificate-only device

Reads need the read scope; every change needs the admin scope (which device certificates
are trusted is an admin decision), and `app.guard` audits it like every credential change.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from scheduler.api.credential_routes import _small_json
from scheduler.api.routes import JSON, svc
from scheduler.api.spec import Endpoint, Param
from scheduler.credentials import check_auth, check_device
from scheduler.device_cas import MAX_PEM_BYTES, DeviceCas, check_fingerprint
from scheduler.errors import PayloadTooLarge, ValidationError
from scheduler.settings import Scope as KeyScope


def _cas(request: Request) -> DeviceCas:
    # The credential store: the broker reads the CAs beside the device records.
    services = svc(request)
    return DeviceCas(services.credentials_redis, services.credential_log.record_ca)


async def _pem(request: Request) -> bytes:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_PEM_BYTES:
            raise PayloadTooLarge(f"a CA certificate is at most {MAX_PEM_BYTES} bytes")
    return bytes(raw)


async def register_device_ca(request: Request) -> Response:
    return JSON(await _cas(request).add(await _pem(request)), status_code=201)


async def list_device_cas(request: Request) -> Response:
    return JSON({"device_cas": await _cas(request).list()})


async def delete_device_ca(request: Request) -> Response:
    await _cas(request).delete(check_fingerprint(request.path_params["fingerprint"]))
    return Response(status_code=204)


async def _auth_body(request: Request) -> str:
    body = await _small_json(request, optional=False)
    if not isinstance(body, dict) or set(body) != {"auth"}:
        raise ValidationError('request body must be {"auth": "..."}', code="wrong_type")
    return check_auth(body["auth"])


async def set_device_auth(request: Request) -> Response:
    device = check_device(request.path_params["device_id"])
    method = await _auth_body(request)
    return JSON(await svc(request).credentials.set_auth(device, method))


async def register_certificate(request: Request) -> Response:
    device = check_device(request.path_params["device_id"])
    return JSON(await svc(request).credentials.register_certificate(device), status_code=201)


FINGERPRINT = Param("fingerprint", "path", "lowercase hex SHA-256 of the CA certificate")
DEVICE = Param("device_id", "path", "device id")


def endpoints() -> list[Endpoint]:
    e = Endpoint
    r, admin = KeyScope.READ, KeyScope.ADMIN
    credentials = "/v1/devices/{device_id}/credentials"
    return [
        e(
            "POST",
            "/v1/device-cas",
            register_device_ca,
            "Register a device CA: devices may authenticate with client certificates it "
            "issued (body: one PEM certificate with cA true)",
            "credentials",
            admin,
            body="text",
            responses={201: "registered", 409: "already registered", 422: "not a usable CA"},
        ),
        e(
            "GET",
            "/v1/device-cas",
            list_device_cas,
            "The registered device CAs (fingerprint, subject, validity)",
            "credentials",
            r,
            responses={200: "OK"},
        ),
        e(
            "DELETE",
            "/v1/device-cas/{fingerprint}",
            delete_device_ca,
            "Remove a device CA (new connections with its certificates are refused)",
            "credentials",
            admin,
            (FINGERPRINT,),
            responses={204: "removed", 404: "no such CA", 422: "bad fingerprint"},
        ),
        e(
            "POST",
            f"{credentials}/certificate",
            register_certificate,
            "Register a device that authenticates with a client certificate only (no secret)",
            "credentials",
            admin,
            (DEVICE,),
            responses={201: "registered", 409: "already registered", 422: "bad device id"},
        ),
        e(
            "POST",
            f"{credentials}/auth",
            set_device_auth,
            "Choose how a device authenticates: secret, certificate or any (its live "
            "connections are closed)",
            "credentials",
            admin,
            (DEVICE,),
            body="json",
            schema={
                "type": "object",
                "required": ["auth"],
                "properties": {"auth": {"enum": ["secret", "certificate", "any"]}},
            },
            responses={200: "OK", 404: "no credentials", 409: "no secret", 422: "invalid"},
        ),
    ]
