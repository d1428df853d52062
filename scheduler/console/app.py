"""The console's routes as one Starlette app, mounted by the API at /console."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from scheduler.console import (
    pages_auth,
    pages_devices,
    pages_dry_runs,
    pages_overview,
    pages_packages,
    pages_tasks,
    pages_webhooks,
)
from scheduler.console.live import Hub
from scheduler.console.settings import ConsoleSettings
from scheduler.console.web import PREFIX, Console, SecurityHeaders
from scheduler.services import Services

STATIC = Path(__file__).parent / "static"


async def _root(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", status_code=307)


def build(services: Services, settings: ConsoleSettings | None = None) -> Starlette:
    settings = settings or ConsoleSettings.from_env(services.settings.api_keys)
    console = Console(services, settings)
    console.hub = Hub(pages_tasks.live_renderer(console), settings.live_interval_s)
    get, post = ["GET"], ["POST"]
    routes = [
        Route("/", pages_overview.overview, methods=get),
        Route("/login", pages_auth.login_form, methods=get),
        Route("/login", pages_auth.login, methods=post),
        Route("/logout", pages_auth.logout, methods=post),
        Route("/packages", pages_packages.packages, methods=get),
        Route("/packages/upload", pages_packages.upload, methods=post),
        Route("/packages/{package_id}", pages_packages.package, methods=get),
        Route("/packages/{package_id}/delete", pages_packages.delete, methods=post),
        Route("/devices", pages_devices.devices, methods=get),
        Route("/devices/{device_id}", pages_devices.device, methods=get),
        Route("/devices/{device_id}/labels", pages_devices.labels, methods=post),
        Route("/tasks", pages_tasks.tasks, methods=get),
        Route("/tasks/new", pages_tasks.new_task, methods=get),
        Route("/tasks/new", pages_tasks.create_task, methods=post),
        Route("/tasks/{task_id}", pages_tasks.task, methods=get),
        Route("/tasks/{task_id}/live", pages_tasks.task_live, methods=get),
        Route("/tasks/{task_id}/{op}", pages_tasks.confirm, methods=get),
        Route("/tasks/{task_id}/{op}", pages_tasks.operate, methods=post),
        Route("/dry-runs/{dry_run_id}", pages_dry_runs.dry_run, methods=get),
        Route("/webhooks", pages_webhooks.webhooks, methods=get),
        Route("/webhooks/add", pages_webhooks.add, methods=post),
        Route("/webhooks/{webhook_id}/delete", pages_webhooks.delete, methods=post),
        Route("/webhooks/{webhook_id}/test", pages_webhooks.test, methods=post),
        Route("/webhooks/{webhook_id}", pages_webhooks.deliveries, methods=get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.console = console
    app.state.services = services  # the API's handlers, reused here, read it from the app
    return app


def mount(services: Services) -> list[Route | Mount]:
    """The routes the API adds: /console/... and a redirect from /console to /console/."""
    return [Route(PREFIX, _root, methods=["GET"]), Mount(PREFIX, app=build(services))]
