"""HTTP handlers and declarations for reading a dry run's device lists.

    POST /v1/tasks?dry_run=true                      counts, and the dry run's id (tasks)
    GET  /v1/dry-runs/{dry_run_id}                   the size of each list, time left
    GET  /v1/dry-runs/{dry_run_id}/devices?category=targeted|skipped|conflict&cursor=&limit=

Lists are kept for `scheduler.dryrun.TTL_S` after the dry run (scheduler/dryrun.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from scheduler.api.routes import JSON, int_query, page, svc
from scheduler.api.spec import Endpoint, Param
from scheduler.dryrun import Category, DryRuns, check_category
from scheduler.settings import Scope

DRY_RUN = Param("dry_run_id", "path", "dry_run_id of a POST /v1/tasks?dry_run=true answer")


def _dry_runs(request: Request) -> DryRuns:
    return DryRuns(svc(request).redis)


async def get_dry_run(request: Request) -> Response:
    return JSON(await _dry_runs(request).summary(request.path_params["dry_run_id"]))


async def dry_run_devices(request: Request) -> Response:
    category = check_category(request.query_params.get("category") or Category.TARGETED.value)
    items, cursor = await _dry_runs(request).page(
        request.path_params["dry_run_id"],
        category,
        offset=int_query(request, "cursor", 0, 0, 10**9),
        limit=int_query(request, "limit", 100, 1, 1000),
    )
    return page(items, cursor)


def endpoints() -> list[Endpoint]:
    return [
        Endpoint(
            "GET",
            "/v1/dry-runs/{dry_run_id}",
            get_dry_run,
            "A dry run: the size of its device lists and how long they are kept",
            "tasks",
            Scope.READ,
            (DRY_RUN,),
            responses={200: "OK", 404: "unknown or expired dry run"},
        ),
        Endpoint(
            "GET",
            "/v1/dry-runs/{dry_run_id}/devices",
            dry_run_devices,
            "A page of a dry run's targeted, skipped (with the reason) or conflicting devices",
            "tasks",
            Scope.READ,
            (
                DRY_RUN,
                Param("category", "query", "targeted (default), skipped or conflict"),
                Param("cursor", "query", "next_cursor of the previous page", "integer"),
                Param("limit", "query", "page size (1-1000, default 100)", "integer"),
            ),
            responses={200: "OK", 404: "unknown or expired dry run", 422: "bad category"},
        ),
    ]
