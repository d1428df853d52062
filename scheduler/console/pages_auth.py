"""Log in with an API key (kept out of URLs: a POSTed form field), log out."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

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


async def login(request: Request) -> Response:
    console = _console(request)
    pre = decode(console.settings.session_key, request.cookies.get(LOGIN_COOKIE), int(time.time()))
    form = await request.form()
    if pre is None or not csrf_ok(pre, await submitted_csrf(request)):
        return _login_page(
            console, request, "The login form expired or its CSRF token is wrong; try again.", 403
        )
    key = form.get("api_key")
    token = key.strip() if isinstance(key, str) else ""
    principal = await console.services.api_keys.identify(token) if token else None
    if principal is None or Scope.READ not in principal.scopes:
        return _login_page(console, request, "Unknown API key, or one without the read scope.", 401)
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
    return response


async def logout(request: Request) -> Response:
    console = _console(request)
    session: Session | None = console.session_of(request)
    if session is not None and not csrf_ok(session, await submitted_csrf(request)):
        return forbidden(console, request, None, "the form's CSRF token is missing or wrong")
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response
