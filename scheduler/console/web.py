"""The console's request plumbing: who is asking (the session), what they may do (the
API's scopes), CSRF checks on every state-changing request, rendering, security headers.

Handlers are plain `async (request, ctx) -> Response`; `page` wraps readers (a session
with the read scope, else the login page), `action(operation)` wraps writers (the write
scope and the session's CSRF token, else 403) and records every answer, refusals
included, in the audit trail as the API operation it performs, named by the session
key's fingerprint (scheduler/audit.py, the code the API's records go through). Business
rules stay in the services the REST API calls; a `SchedulerError` they raise is shown to
the operator with its code and field.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from kafka.errors import KafkaError
from redis.exceptions import RedisError
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler import audit
from scheduler.console import fmt
from scheduler.console.live import Hub
from scheduler.console.login_throttle import LoginThrottle
from scheduler.console.session import COOKIE, KeyBook, Session, csrf_ok, decode
from scheduler.console.settings import ConsoleSettings
from scheduler.errors import SchedulerError
from scheduler.services import Services
from scheduler.settings import Scope as KeyScope

log = logging.getLogger(__name__)
PREFIX = "/console"
TEMPLATES = Path(__file__).parent / "templates"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
STORED = "stored:"  # a session's key_id for a stored API key: this prefix and its id

# No inline script or style anywhere: scripts and styles come from /console/static only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class Ctx:
    console: Console
    session: Session
    scopes: frozenset[KeyScope]

    @property
    def services(self) -> Services:
        return self.console.services

    @property
    def can_write(self) -> bool:
        return KeyScope.WRITE in self.scopes

    def render(
        self, request: Request, name: str, http_status: int = 200, **values: Any
    ) -> Response:
        return self.console.render(
            request, name, http_status, session=self.session, can_write=self.can_write, **values
        )


Handler = Callable[[Request, Ctx], Awaitable[Response]]


class Console:
    hub: Hub  # set by `app.build`: its renderer needs the console's templates

    def __init__(self, services: Services, settings: ConsoleSettings) -> None:
        self.services, self.settings = services, settings
        self.keys = KeyBook(settings.session_key, services.settings.api_keys)
        self.login_throttle = LoginThrottle(services.redis, settings.login_limits)
        # autoescape everywhere: every value in every template is escaped unless marked safe
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
        self.templates = Jinja2Templates(env=env)
        env.filters.update(fmt.FILTERS)
        env.globals["prefix"] = PREFIX

    def session_of(self, request: Request) -> Session | None:
        return decode(self.settings.session_key, request.cookies.get(COOKIE), int(time.time()))

    async def scopes(self, session: Session) -> frozenset[KeyScope]:
        """The session key's scopes now: a revoked stored key has none from the next request."""
        if session.key_id.startswith(STORED):
            return await self.services.api_keys.scopes_of(session.key_id[len(STORED) :])
        return self.keys.scopes(session.key_id)

    def secure(self, request: Request) -> bool:
        return self.settings.secure_cookie or request.url.scheme == "https"

    def render(
        self, request: Request, name: str, http_status: int = 200, **values: Any
    ) -> Response:
        values.setdefault("session", None)
        values.setdefault("can_write", False)
        response: Response = self.templates.TemplateResponse(
            request,
            name,
            {"csrf_field": CSRF_FIELD, **values},
            status_code=http_status,
            headers={"Cache-Control": "no-store"},
        )
        return response

    def failure(self, request: Request, ctx: Ctx | None, exc: Exception, status: int) -> Response:
        if isinstance(exc, SchedulerError):
            body = exc.body()["error"]
        else:
            body = {"code": "unavailable", "message": f"backing store unavailable: {exc}"}
        referer = request.headers.get("referer", "")
        own = f"{request.url.scheme}://{request.url.netloc}{PREFIX}"
        values = {"error": body, "back": referer if referer.startswith(own) else ""}
        if ctx is not None:
            return ctx.render(request, "error.html", status, **values)
        return self.render(request, "error.html", status, **values)


async def _ctx(request: Request) -> tuple[Console, Ctx | None]:
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None:
        return console, None
    scopes = await console.scopes(session)
    if KeyScope.READ not in scopes:
        return console, None
    return console, Ctx(console, session, scopes)


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)


async def _guarded(request: Request, console: Console, ctx: Ctx, handler: Handler) -> Response:
    try:
        return await handler(request, ctx)
    except SchedulerError as exc:
        return console.failure(request, ctx, exc, exc.status)
    except (RedisError, KafkaError) as exc:
        log.exception("backing store unavailable")
        return console.failure(request, ctx, exc, 503)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        console, ctx = await _ctx(request)
        if ctx is None:
            return login_redirect(request)
        return await _guarded(request, console, ctx, handler)

    return wrapped


async def submitted_csrf(request: Request) -> str | None:
    if CSRF_HEADER in request.headers:
        return request.headers[CSRF_HEADER]
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


Operation = str | Callable[[Request], str]  # the API operation an action performs


def action(operation: Operation) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            console, ctx = await _ctx(request)
            response = await _act(request, console, ctx, handler)
            # A signed session names its key even when the key lost its scopes (revoked).
            session = ctx.session if ctx is not None else console.session_of(request)
            record = audit.exchange(
                request,
                response,
                key_id=session.who if session is not None and session.who else None,
                action=operation if isinstance(operation, str) else operation(request),
                route=_route(request),
                created=getattr(request.state, "created", None),
            )
            await console.services.audit.record(record)
            return response

        return wrapped

    return wrap


def note_created(request: Request, made_id: str) -> None:
    """Names what an action made, for its audit record (a redirect has no JSON `id`)."""
    request.state.created = made_id


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return PREFIX + route.path if isinstance(route, Route) else request.url.path


async def _act(request: Request, console: Console, ctx: Ctx | None, handler: Handler) -> Response:
    if ctx is None:
        return forbidden(console, request, None, "log in first: this session is missing or expired")
    if not csrf_ok(ctx.session, await submitted_csrf(request)):
        return forbidden(
            console,
            request,
            ctx,
            "the form's CSRF token is missing or wrong; reload the page and try again",
        )
    if not ctx.can_write:
        return forbidden(
            console, request, ctx, "this API key lacks the write scope: it can look, not act"
        )
    return await _guarded(request, console, ctx, handler)


def forbidden(console: Console, request: Request, ctx: Ctx | None, message: str) -> Response:
    error = {"code": "forbidden", "message": message}
    if ctx is None:
        return console.render(request, "error.html", 403, error=error, back="")
    return ctx.render(request, "error.html", 403, error=error, back="")


def see(path: str, **query: str) -> RedirectResponse:
    """303 to a console page after an action (post/redirect/get)."""
    url = URL(PREFIX + path)
    if query:
        url = url.include_query_params(**query)
    return RedirectResponse(str(url), status_code=303)


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


class SecurityHeaders:
    """Adds the CSP and its companions to every console response, and `Server-Timing`
    (`app;dur=<ms>`: from the request's arrival to its response's first byte, the page's
    server-side cost as the browser's developer tools and the benchmark read it)."""

    HEADERS = (
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                took_ms = (time.perf_counter() - started) * 1000
                timing = (b"server-timing", b"app;dur=%.2f" % took_ms)
                message["headers"] = [*message.get("headers", []), *self.HEADERS, timing]
            await send(message)

        await self.app(scope, receive, with_headers)
