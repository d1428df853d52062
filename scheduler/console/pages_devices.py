"""Devices: search and filter with cursor paging (never loading the fleet), and a device
page with its versions, presence, labels (editable), current job and timeline story."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from scheduler.console import story
from scheduler.console.taskform import words
from scheduler.console.web import Ctx, action, page, see
from scheduler.devices import DeviceFilter, check_name
from scheduler.errors import ValidationError
from scheduler.targets import check_ids

PAGE = 50
FIELDS = ("q", "fw_version", "sw_version", "group", "tag", "online")


def _filter(query: dict[str, str]) -> DeviceFilter:
    online = query.get("online", "")
    if online not in ("", "true", "false"):
        raise ValidationError(
            f"online={online!r} must be true or false", code="bad_value", field="online"
        )

    def one(name: str) -> tuple[str, ...]:
        return (query[name],) if query.get(name) else ()

    return DeviceFilter(
        fw_versions=one("fw_version"),
        sw_versions=one("sw_version"),
        groups=tuple(check_name(g, "group", "group") for g in one("group")),
        tags=tuple(check_name(t, "tag", "tag") for t in one("tag")),
        online=None if not online else online == "true",
    )


@page
async def devices(request: Request, ctx: Ctx) -> Response:
    query = {k: request.query_params.get(k, "").strip() for k in FIELDS}
    items, cursor = await ctx.services.registry.page(
        _filter(query),
        after=request.query_params.get("cursor", ""),
        limit=PAGE,
        prefix=query["q"],
    )
    groups = [g["name"] for g in await ctx.services.registry.groups()]
    return ctx.render(
        request, "devices.html", devices=items, next_cursor=cursor, query=query, groups=groups
    )


@page
async def device(request: Request, ctx: Ctx) -> Response:
    view = await ctx.services.registry.show(request.path_params["device_id"])
    tries = story.story(view["timeline"])
    groups = [g["name"] for g in await ctx.services.registry.groups()]
    return ctx.render(
        request,
        "device.html",
        device=view,
        tries=tries[::-1],
        served=story.served_bytes(tries),
        groups=groups,
        done=request.query_params.get("done", ""),
    )


@action("patch_device")
async def labels(request: Request, ctx: Ctx) -> Response:
    device_id = check_ids([request.path_params["device_id"]], "device_id")[0]
    form = await request.form()
    chosen = [g for g in form.getlist("groups") if isinstance(g, str) and g]
    tags_raw = form.get("tags")
    tags = words(tags_raw) if isinstance(tags_raw, str) else []
    await ctx.services.registry.set_labels(device_id, chosen, tags)
    return see(f"/devices/{device_id}", done="labels")
