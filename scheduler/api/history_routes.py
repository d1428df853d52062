"""HTTP handler and declaration for reading a device's full history from the log.

    GET /v1/devices/{device_id}/history?cursor=&limit=   job events, oldest first

Redis keeps a device's newest timeline entries (a succeeded try folded into its result);
this reads every job event of the device back from `ota.job-events`
(scheduler/device_history.py).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from scheduler.api.routes import int_query, page, svc
from scheduler.api.spec import Endpoint, Param
from scheduler.device_history import SCAN_MAX, read_history
from scheduler.settings import Scope

_LAST_OFFSET = 2**62


async def device_history(request: Request) -> Response:
    services, device_id = svc(request), request.path_params["device_id"]
    where = (await services.registry.show(device_id))["history"]  # NotFound: unknown device
    limit = int_query(request, "limit", 100, 1, 1000)
    if where is None:  # no job event applied yet
        return page([], None)
    start = int_query(request, "cursor", where["first_offset"], where["first_offset"], _LAST_OFFSET)
    items, cursor = await asyncio.get_running_loop().run_in_executor(
        None, read_history, services.settings.common, where["partition"], start, device_id, limit
    )
    return page(items, cursor)


def endpoints() -> list[Endpoint]:
    return [
        Endpoint(
            "GET",
            "/v1/devices/{device_id}/history",
            device_history,
            "A device's job events read back from ota.job-events, every id and detail, "
            f"oldest first (a page reads at most {SCAN_MAX:,} records of the partition)",
            "devices",
            Scope.READ,
            (
                Param("device_id", "path", "device id"),
                Param("cursor", "query", "next_cursor of the previous page", "integer"),
                Param("limit", "query", "page size (1-1000, default 100)", "integer"),
            ),
            responses={200: "OK", 404: "unknown device", 503: "Kafka unavailable"},
        ),
    ]
