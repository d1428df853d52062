"""Log in with an API key (kept out of URLs: a POSTed form field), log out.

Both are in the audit trail (scheduler/audit.py), as `console_login` and `console_logout`
under the key's fingerprint, never the key: a successful login, every logout of a session,
and failed logins (unknown key or one without the read scope: 401, key_id null for an
unknown key; an expired or forged form: 403; too many failures from one address: 429).
Failed logins go through the audit trail's budget for refused unauthenticated attempts
(`AuditLog.record_failure`), and an address that fails too often is throttled
(scheduler/console/login_throttle.py): a flood of failed logins grows neither without
bound. Both budgets are shared by every scheduler replica through Redis.
"""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ota import metrics
from scheduler import audit
from scheduler.console.session import (
    COOKIE,
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    Session,
    csrf_ok,
    decode,
    encode,
    new_session,
)
from scheduler.console.web import PREFIX, STORED, Console, forbidden, submitted_csrf
from scheduler.settings import Scope

LOGINS = metrics.counter(
    "scheduler",
    "console_logins_total",
    "Console login attempts by result (ok, bad_key, bad_form, throttled)",
    ("result",),
)


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _next(raw: str) -> str:
    """Only a console path: never an open redirect to another site."""
    if raw.startswith(PREFIX) and not raw.startswith("//") and "\\" not in raw:
        return raw
    return PREFIX + "/"


def _set(
    console: Console, request: Request, response: Response, name: str, value: str, ttl_s: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=ttl_s,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=console.secure(request),
    )


async def login_form(request: Request) -> Response:
    console = _console(request)
    if console.session_of(request) is not None:
        return RedirectResponse(_next(request.query_params.get("next", "")), status_code=303)
    return _login_page(console, request, "", 200)


def _login_page(console: Console, request: Request, error: str, status: int) -> Response:
    pre = new_session("", int(time.time()), LOGIN_TTL_S)
    response = console.render(
        request,
        "login.html",
        status,
        login=pre,
        error=error,
        next=_next(request.query_params.get("next", "")),
    )
    _set(
        console,
        request,
        response,
        LOGIN_COOKIE,
        encode(console.settings.session_key, pre),
        LOGIN_TTL_S,
    )
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


async def login(request: Request) -> Response:
    console = _console(request)
    throttle, client = console.login_throttle, _client(request)
    wait_s = await throttle.retry_after_s(client)
    if wait_s > 0:  # the key is not even looked at: guessing goes at the refill rate
        retry = str(math.ceil(wait_s))
        message = f"Too many failed logins from your address; try again in {retry} s."
        response = _login_page(console, request, message, 429)
        response.headers["Retry-After"] = retry
        await _failed(console, request, response, None, "throttled")
        return response
    pre = decode(console.settings.session_key, request.cookies.get(LOGIN_COOKIE), int(time.time()))
    form = await request.form()
    if pre is None or not csrf_ok(pre, await submitted_csrf(request)):
        await throttle.failed(client)
        response = _login_page(
            console, request, "The login form expired or its CSRF token is wrong; try again.", 403
        )
        await _failed(console, request, response, None, "bad_form")
        return response
    key = form.get("api_key")
    token = key.strip() if isinstance(key, str) else ""
    principal = await console.services.api_keys.identify(token) if token else None
    if principal is None or Scope.READ not in principal.scopes:
        await throttle.failed(client)
        response = _login_page(
            console, request, "Unknown API key, or one without the read scope.", 401
        )
        known = principal.key_id if principal is not None else None  # never the key itself
        await _failed(console, request, response, known, "bad_key")
        return response
    # A configured key is named by a keyed fingerprint, a stored one by its id (revocable).
    key_id = STORED + principal.stored_id if principal.stored_id else console.keys.login(token)
    session = new_session(
        key_id or "", int(time.time()), console.settings.session_ttl_s, principal.key_id
    )
    target = form.get("next")
    response = RedirectResponse(_next(target if isinstance(target, str) else ""), status_code=303)
    _set(
        console,
        request,
        response,
        COOKIE,
        encode(console.settings.session_key, session),
        console.settings.session_ttl_s,
    )
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    LOGINS.labels("ok").inc()
    await _record(console, request, response, principal.key_id, "console_login")
    return response


async def logout(request: Request) -> Response:
    console = _console(request)
    session: Session | None = console.session_of(request)
    if session is None:  # nothing to end, and nobody to name: not recorded
        return RedirectResponse(PREFIX + "/login", status_code=303)
    if not csrf_ok(session, await submitted_csrf(request)):
        response = forbidden(console, request, None, "the form's CSRF token is missing or wrong")
    else:
        response = RedirectResponse(PREFIX + "/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
    await _record(console, request, response, session.who or None, "console_logout")
    return response


def _exchange(
    request: Request, response: Response, key_id: str | None, action: str
) -> dict[str, Any]:
    # /console/login and /console/logout have no parameters: the path is the route.
    path = request.url.path
    return audit.exchange(request, response, key_id=key_id, action=action, route=path)


async def _record(
    console: Console, request: Request, response: Response, key_id: str | None, action: str
) -> None:
    await console.services.audit.record(_exchange(request, response, key_id, action))


async def _failed(
    console: Console, request: Request, response: Response, key_id: str | None, result: str
) -> None:
    LOGINS.labels(result).inc()
    record = _exchange(request, response, key_id, "console_login")
    await console.services.audit.record_failure(record)
