"""The dashboard's tasks: a list by owner, status and kind, a task page with its progress and its run
(live while the task is not over), and cancelling a task."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from stepline import errors
from stepline.server import runtime as runtime_
from stepline.server.api import runs as runs_api
from stepline.server.api import tasks as tasks_api
from stepline.server.dashboard import actions, live, pages, security, templating
from stepline.server.errors import ApiError
from stepline.storage import records

router = APIRouter(include_in_schema=False)


def _filters(params: dict[str, str]) -> tuple[str | None, records.TaskStatus | None, str | None, str | None]:
    owner = params.get("owner") or None
    raw_status = params.get("status") or None
    try:
        kind = tasks_api.parse_kind(params.get("kind"))
        status = records.TaskStatus(raw_status) if raw_status else None
        cursor = runs_api.parse_cursor(params.get("cursor"))
    except ValueError:
        allowed = ", ".join(item.value for item in records.TaskStatus)
        raise pages.PageError(400, f"status must be one of {allowed} (got {raw_status!r})") from None
    except ApiError as exc:
        raise pages.PageError(400, exc.message) from None
    return owner, status, kind, cursor


@router.get("/tasks", response_class=HTMLResponse)
async def tasks_page(request: Request) -> Response:
    runtime = pages.runtime_for(request)
    owner, status, kind, cursor = _filters(dict(request.query_params))
    found = await runtime.store.list_tasks(
        owner=owner, status=status, kind=kind, cursor=cursor, limit=pages.PAGE_SIZE + 1
    )
    more = len(found) > pages.PAGE_SIZE
    found = found[: pages.PAGE_SIZE]
    filters = (("owner", owner), ("status", status and status.value), ("kind", kind))
    kept = {key: value for key, value in filters if value}
    next_query = urllib.parse.urlencode({**kept, "cursor": found[-1].id}) if more else None
    return templating.render(
        request,
        "tasks.html",
        nav="tasks",
        tasks=found,
        owner=owner or "",
        kind=kind or "",
        chosen=status.value if status else "",
        statuses=[item.value for item in records.TaskStatus],
        next_query=next_query,
    )


async def _load(runtime: runtime_.ServerRuntime, task_id: str) -> dict[str, Any]:
    task = await runtime.store.get_task(task_id)
    if task is None:
        raise pages.PageError(404, f"no task {task_id!r}")
    run = await runtime.store.get_run(task.run_id) if task.run_id else None
    percent = None if task.progress is None else round(task.progress * 100)
    return {"task": task, "run": run, "percent": percent}


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: str) -> Response:
    runtime = pages.runtime_for(request)
    context = await _load(runtime, task_id)
    notice = "Task cancelled." if request.query_params.get("done") == "cancelled" else ""
    return templating.render(request, "task.html", nav="tasks", notice=notice, **context)


@router.get("/live/tasks/{task_id}")
async def live_task(request: Request, task_id: str) -> Response:
    runtime = pages.runtime_for(request)
    await _load(runtime, task_id)  # a 404 page now rather than an empty stream

    async def body() -> AsyncIterator[bytes]:
        yield f"retry: {live.RETRY_MS}\n\n".encode()
        last = None
        deadline = time.monotonic() + live.MAX_STREAM_S
        while time.monotonic() < deadline:
            try:
                context = await _load(runtime, task_id)
            except errors.StorageError:
                await asyncio.sleep(live.POLL_S * 4)
                continue
            html = templating.render_fragment("_task_live.html", csrf=security.csrf_token(request), **context)
            if html != last:
                yield live.message("run", html)
                last = html
            if context["task"].status.is_terminal:
                yield live.message("end", context["task"].status.value)
                return
            await asyncio.sleep(live.POLL_S)

    headers = {**security.SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


@router.post("/tasks/{task_id}/cancel")
async def cancel_task(request: Request, task_id: str) -> Response:
    runtime, _ = await actions.acting(request)
    try:
        await runtime.cancel_task(task_id)
    except errors.TaskNotFoundError as exc:
        raise pages.PageError(404, str(exc)) from None
    return actions.back(f"/tasks/{urllib.parse.quote(task_id, safe='')}", done="cancelled")
