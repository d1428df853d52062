"""A dry run's devices: the targeted, skipped and conflicting lists of a task form's dry
run (scheduler/dryrun.py), a page at a time, the same pages the API serves."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from scheduler.console.web import Ctx, page
from scheduler.dryrun import Category, DryRuns, check_category

PAGE = 100


@page
async def dry_run(request: Request, ctx: Ctx) -> Response:
    did = request.path_params["dry_run_id"]
    category = check_category(request.query_params.get("category") or Category.TARGETED.value)
    raw_cursor = request.query_params.get("cursor", "")
    offset = int(raw_cursor) if raw_cursor.isdigit() else 0
    runs = DryRuns(ctx.services.redis)
    summary = await runs.summary(did)
    items, cursor = await runs.page(did, category, offset=offset, limit=PAGE)
    return ctx.render(
        request,
        "dry_run.html",
        dry_run=summary,
        category=category.value,
        categories=[c.value for c in Category],
        items=items,
        offset=offset,
        next_cursor=cursor,
    )
