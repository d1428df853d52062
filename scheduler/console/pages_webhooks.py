"""Webhooks: list, add, delete, send a test event, and each one's delivery log."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scheduler.console.web import Ctx, action, note_created, page, see
from scheduler.errors import SchedulerError
from scheduler.webhook_probe import send_test
from scheduler.webhooks import EVENT_KINDS, public

LOG_SHOWN = 200


async def _list_page(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    hooks = [public(h) for h in await ctx.services.webhooks.all()]
    return ctx.render(
        request,
        "webhooks.html",
        status,
        hooks=hooks,
        kinds=EVENT_KINDS,
        done=request.query_params.get("done", ""),
        **extra,
    )


@page
async def webhooks(request: Request, ctx: Ctx) -> Response:
    return await _list_page(request, ctx, form={})


@action("create_webhook")
async def add(request: Request, ctx: Ctx) -> Response:
    raw = await request.form()
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    body: dict[str, Any] = {
        "url": form.get("url", "").strip(),
        "secret": form.get("secret", ""),
        "events": [e for e in raw.getlist("events") if isinstance(e, str)],
    }
    if task_id := form.get("task_id", "").strip():
        body["task_id"] = task_id
    try:
        hook = await ctx.services.webhooks.create(body)
    except SchedulerError as exc:
        form.pop("secret", None)  # never echoed back into the page
        return await _list_page(request, ctx, exc.status, form=form, error=exc.body()["error"])
    note_created(request, hook["id"])
    return see("/webhooks", done="added")


@action("delete_webhook")
async def delete(request: Request, ctx: Ctx) -> Response:
    await ctx.services.webhooks.delete(request.path_params["webhook_id"])
    return see("/webhooks", done="deleted")


@action("test_webhook")
async def test(request: Request, ctx: Ctx) -> Response:
    """One signed test event to the endpoint now; its outcome tops the delivery log."""
    hid = request.path_params["webhook_id"]
    services = ctx.services
    await send_test(services.redis, services.webhooks, hid, services.settings.webhook_timeout_s)
    return see(f"/webhooks/{hid}", done="test")


@page
async def deliveries(request: Request, ctx: Ctx) -> Response:
    hid = request.path_params["webhook_id"]
    items = await ctx.services.webhooks.deliveries(hid, LOG_SHOWN)
    hook = next((public(h) for h in await ctx.services.webhooks.all() if h["id"] == hid), None)
    return ctx.render(
        request,
        "deliveries.html",
        hook=hook,
        items=items,
        done=request.query_params.get("done", ""),
    )
