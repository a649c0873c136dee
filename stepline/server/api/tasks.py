"""``/v1/tasks``: enqueue a tracked task, read it, stream its changes, list, cancel, report progress.

Apps in any language use these routes. They are authenticated like the event API: in
production (or when the server has keys) ``Authorization: Bearer <event key>``, or the
signing key, is required. Enqueue, read and progress are on the request path of an app's
users and are served by the ``lane`` (``LANE``); the others are FastAPI routes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from stepline import errors
from stepline.engine import task_stream
from stepline.engine import tasks as tasks_
from stepline.protocol import ids, sse
from stepline.sdk import events as events_
from stepline.server import auth, lane
from stepline.server import runtime as runtime_
from stepline.server.api import events as events_api
from stepline.server.api import runs as runs_api
from stepline.server.errors import ApiError
from stepline.storage import records

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

ClientServer = auth.ClientServer


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, description="The event that starts the task's function.")
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, description="Idempotency key of the runs it starts; default: the task id.")
    user: dict[str, Any] = Field(default_factory=dict)
    ts: int | None = None


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    feature: str = Field(min_length=1, max_length=200, description="What is being counted, e.g. `tailor_resume`.")
    limit: int = Field(ge=1, le=1_000_000_000, description="Uses allowed per owner per window.")
    window: float | str = Field(description="Seconds, or a time string like `1d` or `12h`.")
    refund_on_failure: bool = Field(default=False, description="Give the use back if the task fails.")


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: str = Field(min_length=1, max_length=tasks_.MAX_KIND_LENGTH)
    owner: str = Field(min_length=1, max_length=tasks_.MAX_OWNER_LENGTH)
    event: EventIn
    quota: QuotaIn | None = None
    pending_timeout: float | str | None = Field(
        default=None, description="Seconds or a time string; default 10 minutes."
    )
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Chosen by the client so that a retried request returns the task it created.",
    )


class ProgressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None = Field(default=None, max_length=tasks_.MAX_MESSAGE_LENGTH)


def task_request(body: TaskIn) -> tasks_.TaskRequest:
    """Checked twice on purpose: pydantic for the shape (422 naming the field), then the same
    rules the embedded engine applies, so both paths accept exactly the same tasks."""
    raw = body.model_dump(exclude_none=True)
    name = body.event.name
    if not name.strip():
        raise ApiError(422, "invalid request: event.name: must be a non-empty string")
    if name.lower().startswith(events_.INTERNAL_PREFIX):
        raise ApiError(
            422, f"invalid request: event.name: names starting with {events_.INTERNAL_PREFIX!r} are reserved"
        )
    try:
        raw["event"] = events_api.validate_event(raw["event"], 0)
    except ApiError as exc:  # the ingest route's wording ("event 0: ...") for a task's one event
        status = 422 if exc.status == 400 else exc.status
        raise ApiError(status, "invalid request: " + exc.message.replace("event 0", "event", 1)) from None
    try:
        return tasks_.request_from_body(raw)
    except errors.ConfigurationError as exc:
        raise ApiError(422, f"invalid request: {exc}") from None


async def enqueue(request: lane.Request) -> lane.Reply:
    """Create the task (pending), its event and the runs it starts, in one transaction.
    429 with `Retry-After` when the owner's quota is used up (nothing is written)."""
    enqueued = await request.runtime.enqueue_task(task_request(request.parse(TaskIn)))
    return lane.Reply(202, tasks_.task_body(enqueued.task))


async def list_tasks(request: lane.Request) -> lane.Reply:
    """One page of tasks, newest first; pass the answer's `cursor` for the next page."""
    query = request.query
    page = await tasks_.page_body(
        request.runtime.store,
        owner=query.get("owner") or None,
        status=_status(query.get("status")),
        cursor=runs_api.parse_cursor(query.get("cursor")),
        limit=runs_api.parse_limit(query.get("limit")),
        kind=parse_kind(query.get("kind")),
    )
    return lane.Reply(200, page)


async def get_task(request: lane.Request) -> lane.Reply:
    """The task now: status, progress and message, result or error, timestamps."""
    return lane.Reply(
        200, tasks_.task_body(await request.runtime.require_task(ids.canonical(request.params["task_id"])))
    )


async def report_progress(request: lane.Request) -> lane.Reply:
    """What functions call (`ctx.task.progress`). `recorded` is false when the task has ended or
    already reported more progress: progress only moves forward."""
    body = request.parse(ProgressIn)
    task_id = ids.canonical(request.params["task_id"])
    recorded = await request.runtime.report_task_progress(task_id, body.progress, body.message)
    return lane.Reply(200, {"id": task_id, "recorded": recorded})


def _client_key(runtime: runtime_.ServerRuntime, _: Mapping[str, str], headers: Mapping[str, str]) -> None:
    auth.check_client_key(runtime, headers.get("authorization", ""))


_ANSWERS = {401: "No or a wrong event key.", 503: "The database is unavailable: nothing was written."}
LANE = (
    lane.Route(
        "POST",
        "/v1/tasks",
        enqueue,
        "Enqueue a task",
        {
            202: "The task, pending.",
            422: "The body is not a task: the error names the field.",
            429: "The owner's quota is used up (`Retry-After`); nothing was written.",
            **_ANSWERS,
        },
        body=TaskIn,
        check=_client_key,
        tag="tasks",
    ),
    lane.Route(
        "GET",
        "/v1/tasks",
        list_tasks,
        "List tasks",
        {200: "A page of tasks.", 400: "A bad status, kind, cursor or limit.", **_ANSWERS},
        query={
            "owner": "Only this owner's tasks.",
            "status": "pending, running, complete, failed or cancelled.",
            "kind": "Only tasks of this kind.",
            "cursor": "The `cursor` of the previous page.",
            "limit": "Tasks per page, from 1 to 500; default 50.",
        },
        check=_client_key,
        tag="tasks",
    ),
    lane.Route(
        "GET",
        "/v1/tasks/{task_id}",
        get_task,
        "Get a task",
        {200: "The task.", 404: "No such task.", **_ANSWERS},
        check=_client_key,
        tag="tasks",
    ),
    lane.Route(
        "POST",
        "/v1/tasks/{task_id}/progress",
        report_progress,
        "Report a task's progress",
        {200: "Whether it was recorded.", 404: "No such task.", 422: "Not a progress report.", **_ANSWERS},
        body=ProgressIn,
        check=_client_key,
        tag="tasks",
    ),
)
"""The routes of this module served by the lane."""


@router.get(
    "/{task_id}/stream",
    summary="Stream a task's changes (server-sent events)",
    responses={
        200: {"description": "`text/event-stream`: one `task` frame per change, `id` the task's version."},
        204: {"description": "`Last-Event-ID` names the ended task's last version: nothing more will come."},
        400: {"model": runs_api.ErrorBody, "description": "`Last-Event-ID` is not a version of the task."},
        **runs_api.error_responses(401, 404, 503),
    },
)
async def stream_task(task_id: str, request: Request, server: ClientServer) -> Response:
    """One `task` event with the task now, then one at every change; the stream closes after the
    task reaches complete, failed or cancelled. A client reconnecting with `Last-Event-ID` gets
    the changes after that version (or the task now, if they are no longer kept), and `204` if
    it already has the task's terminal version."""
    task_id = ids.canonical(task_id)
    try:
        seen = sse.last_event_version(request.headers.get("last-event-id"))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    current = await server.require_task(task_id)
    if sse.has_the_end(seen, current.version, current.status.is_terminal):
        return Response(status_code=204)
    frames = _frames(server, current, seen, request)
    return StreamingResponse(frames, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


@router.post("/{task_id}/cancel", summary="Cancel a task")
async def cancel_task(task_id: str, server: ClientServer) -> dict[str, Any]:
    """Cancels the task's run (it stops before its next step); a task that already ended is
    returned unchanged."""
    return tasks_.task_body(await server.cancel_task(ids.canonical(task_id)))


async def _frames(
    server: runtime_.ServerRuntime, task: records.TaskRecord, seen: int | None, request: Request
) -> AsyncIterator[bytes]:
    quiet_since = time.monotonic()
    async for change in task_stream.stream(server.store, task, seen):
        if change is None:  # nothing new since the last read
            if await request.is_disconnected():
                return
            if time.monotonic() - quiet_since > sse.KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield sse.KEEPALIVE
            continue
        quiet_since = time.monotonic()
        yield sse.frame("task", tasks_.task_body(change), change.version)


def parse_kind(raw: str | None) -> str | None:
    """A ``kind`` filter (None when absent); ``ApiError`` 400 for one no task can have."""
    if not raw:
        return None
    if len(raw) > tasks_.MAX_KIND_LENGTH:
        raise ApiError(400, f"kind must be a task kind, at most {tasks_.MAX_KIND_LENGTH} characters")
    return raw


def _status(raw: str | None) -> records.TaskStatus | None:
    if not raw:
        return None
    try:
        return records.TaskStatus(raw.lower())
    except ValueError:
        allowed = ", ".join(status.value for status in records.TaskStatus)
        raise ApiError(400, f"status must be one of {allowed} (got {raw!r})") from None
