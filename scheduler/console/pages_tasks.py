"""Tasks: list, create (with a dry-run preview first), the live task page, and pause,
resume (approve the next wave), cancel, retry and roll back, each confirmed on a page of its own
that says what will happen before a second click acts."""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ota.clock import now_ms
from ota.jobstates import ACTIVE as ACTIVE_JOB_STATES
from ota.jobstates import CANCELLABLE, DeviceStatus, JobState
from scheduler.api import routes as api
from scheduler.console import charts, live
from scheduler.console.taskform import TIMEOUTS, task_body
from scheduler.console.web import Console, Ctx, action, note_created, page, see
from scheduler.errors import Gone, NotFound, SchedulerError
from scheduler.taskstate import PENDING, RELEASED, STATES
from scheduler.taskstatus import TaskStatus

PAGE = 50
DEVICE_PAGE = 50
UPLOAD_CHUNK = 1024 * 1024
OPS = {
    "pause": ("Pause", {"Waiting", "Processing"}),
    "resume": ("Resume", {"Paused"}),
    "cancel": ("Cancel", {"Waiting", "Processing", "Paused"}),
    "retry": ("Retry failed devices", {"Fail", "PartialSuccess", "Stopped"}),
    # Allowed only to a task with a rollback package and no rollback yet (the page says).
    "rollback": ("Roll back", {s.value for s in TaskStatus} - {"Initializing"}),
}
DEVICE_FILTERS = (*(s.value for s in DeviceStatus), *STATES)


@page
async def tasks(request: Request, ctx: Ctx) -> Response:
    status = request.query_params.get("status") or None
    offset = api.int_query(request, "cursor", 0, 0, 10**9)
    items, cursor = await ctx.services.tasks.page(status=status, offset=offset, limit=PAGE)
    return ctx.render(
        request,
        "tasks.html",
        tasks=items,
        next_cursor=cursor,
        status=status or "",
        statuses=[s.value for s in TaskStatus],
    )


async def _form_page(
    request: Request, ctx: Ctx, form: dict[str, str], status: int = 200, **extra: Any
) -> Response:
    packages, _ = await ctx.services.packages.page(offset=0, limit=200)
    groups = [g["name"] for g in await ctx.services.registry.groups()]
    return ctx.render(
        request,
        "task_new.html",
        status,
        form=form,
        packages=packages,
        groups=groups,
        timeouts=TIMEOUTS,
        **extra,
    )


@page
async def new_task(request: Request, ctx: Ctx) -> Response:
    form = {"package_id": request.query_params.get("package_id", ""), "type": "firmware"}
    return await _form_page(request, ctx, form)


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


@action("create_task")
async def create_task(request: Request, ctx: Ctx) -> Response:
    raw = await request.form()
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    upload = raw.get("device_file")
    try:
        list_id = ""
        if isinstance(upload, UploadFile) and upload.filename:
            listed = await ctx.services.tasks.upload_list(_chunks(upload))
            list_id = listed["list_id"]
        body = task_body(form, now_ms(), list_id)
        if form.get("action") == "preview":
            preview, _ = await ctx.services.tasks.create({**body, "dry_run": True})
            return await _form_page(request, ctx, form, preview=preview)
        created, _ = await ctx.services.tasks.create(body)
    except SchedulerError as exc:
        return await _form_page(request, ctx, form, exc.status, error=exc.body()["error"])
    note_created(request, created["id"])
    return see(f"/tasks/{created['id']}", done="created")


def live_renderer(console: Console) -> live.Render:
    template = console.templates.env.get_template("task_live.html")

    async def render(tid: str, history: deque[tuple[float, int]]) -> bytes:
        try:
            view = await console.services.tasks.view(tid)
        except NotFound as exc:
            return live.frame("progress", f"<p class=error>{html.escape(exc.message)}</p>")
        history.append((time.monotonic(), view["progress"]["finished"]))
        chart = charts.rate(list(history), "devices finished per minute")
        return live.frame("progress", template.render(task=view, chart=chart, prefix="/console"))

    return render


@page
async def task(request: Request, ctx: Ctx) -> Response:
    tid = request.path_params["task_id"]
    view = await ctx.services.tasks.view(tid)
    status = request.query_params.get("devices") or None
    if status is not None and status not in DEVICE_FILTERS:
        status = None
    try:
        rows, cursor = await ctx.services.tasks.devices(
            tid, status=status, after=request.query_params.get("cursor", ""), limit=DEVICE_PAGE
        )
        devices_gone = ""
    except Gone as exc:
        rows, cursor, devices_gone = [], None, exc.message
    q = request.query_params
    done = {
        k: q[k]
        for k in ("done", "not_started", "cancel_requested", "left_to_finish", "retried", "pending")
        if k in q
    }
    return ctx.render(
        request,
        "task.html",
        task=view,
        chart=charts.rate([], "devices finished per minute"),
        rows=rows,
        devices_gone=devices_gone,
        next_cursor=cursor,
        device_status=status or "",
        device_filters=DEVICE_FILTERS,
        done=done,
    )


async def task_live(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.session_of(request)
    if session is None or not await console.scopes(session):
        return Response("log in first", status_code=401)
    tid = request.path_params["task_id"]
    await console.services.tasks.doc(tid)  # 404 for an unknown task, before streaming
    return StreamingResponse(
        live.stream(console.hub, tid),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def cancel_outlook(view: dict[str, Any]) -> dict[str, int]:
    """Which devices a cancel stops and which it leaves to finish, from the task's counts
    (the same state sets `Tasks.cancel` reports with)."""
    states: dict[str, int] = view["counts"]["states"]
    cancellable = {RELEASED, *(s.value for s in CANCELLABLE)}
    finishing = {s.value for s in ACTIVE_JOB_STATES} - cancellable
    return {
        "not_started": states.get(PENDING, 0),
        "cancel_requested": sum(states.get(s, 0) for s in cancellable),
        "left_to_finish": sum(states.get(s, 0) for s in finishing),
    }


def can_roll_back(view: dict[str, Any]) -> bool:
    return bool(view["policy"].get("rollback_package_id")) and not view.get("rollback_task_id")


def _operation(request: Request) -> str:
    """The API operation a task action performs: `pause_task` for /tasks/{id}/pause."""
    op = request.path_params["op"]
    return f"{op}_task" if op in OPS else "unknown_task_operation"


@page
async def confirm(request: Request, ctx: Ctx) -> Response:
    tid, op = request.path_params["task_id"], request.path_params["op"]
    if op not in OPS:
        raise NotFound(f"no task operation {op!r}", code="unknown_operation")
    view = await ctx.services.tasks.view(tid)
    return ctx.render(
        request,
        "task_confirm.html",
        task=view,
        op=op,
        label=OPS[op][0],
        allowed=view["status"] in OPS[op][1] and (op != "rollback" or can_roll_back(view)),
        outlook=cancel_outlook(view),
        states=[s.value for s in JobState],
    )


@action(_operation)
async def operate(request: Request, ctx: Ctx) -> Response:
    tid, op = request.path_params["task_id"], request.path_params["op"]
    t = ctx.services.tasks
    if op == "pause":
        await t.pause(tid)
    elif op == "resume":
        await t.resume(tid)
    elif op == "cancel":
        result = await t.cancel(tid)
        counts = {k: str(result[k]) for k in ("not_started", "cancel_requested", "left_to_finish")}
        return see(f"/tasks/{tid}", done="cancel", **counts)
    elif op == "retry":
        result = await t.retry(tid)
        return see(f"/tasks/{tid}", done="retry", retried=str(result["retried"]))
    elif op == "rollback":
        answer, _ = await ctx.services.rollbacks.request(tid)
        started = answer["rollback_task"]
        return see(f"/tasks/{tid}", done="rollback", pending="" if started else "1")
    else:
        raise NotFound(f"no task operation {op!r}", code="unknown_operation")
    return see(f"/tasks/{tid}", done=op)
