"""Packages: list, upload (streamed by the browser straight into the package store), who
uses one, delete (refused while in use, with the reason)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from scheduler import keys
from scheduler.api import routes as api
from scheduler.console.web import Ctx, action, page, see
from scheduler.errors import SchedulerError

PAGE = 50


@page
async def packages(request: Request, ctx: Ctx) -> Response:
    offset = api.int_query(request, "cursor", 0, 0, 10**9)
    items, cursor = await ctx.services.packages.page(offset=offset, limit=PAGE)
    return ctx.render(
        request,
        "packages.html",
        packages=items,
        next_cursor=cursor,
        max_bytes=ctx.services.settings.package_max_bytes,
        done=request.query_params.get("done", ""),
    )


@page
async def package(request: Request, ctx: Ctx) -> Response:
    pid = request.path_params["package_id"]
    pkg = await ctx.services.packages.get(pid)
    users = sorted(u.decode() for u in await ctx.services.redis.smembers(keys.package_users(pid)))
    tasks = []
    for tid in users[:100]:
        doc = await ctx.services.tasks.doc(tid)
        tasks.append({"id": tid, "name": doc.get("name", ""), "status": doc["status"]})
    return ctx.render(request, "package.html", package=pkg, users=tasks)


@action("upload_package")
async def upload(request: Request, ctx: Ctx) -> Response:
    """The browser sends the File object itself as the body (XHR, progress events): the
    same streaming handler as `POST /v1/packages`, behind the session and its CSRF token."""
    try:
        return await api.upload_package(request)
    except SchedulerError as exc:  # the page's script shows the API's error as it is
        return api.JSON(exc.body(), status_code=exc.status)


@action("delete_package")
async def delete(request: Request, ctx: Ctx) -> Response:
    pid = request.path_params["package_id"]
    await ctx.services.packages.delete(pid)
    return see("/packages", done="deleted")
