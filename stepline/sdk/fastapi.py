"""Serve functions from a FastAPI (or Starlette-based) app.

::

    app = FastAPI()
    stepline.fastapi.serve(app, client, [tailor_resume, mark_failed], path="/api/stepline")

The route answers GET, PUT and POST on ``path``. It authenticates requests by their
``X-Inngest-Signature`` (signed with ``STEPLINE_SIGNING_KEY``), not by cookies or tokens:
if the app has its own authentication middleware, let ``path`` through it unauthenticated,
or the server's calls will be refused before they reach Stepline.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import fastapi
import fastapi.responses

from stepline import errors
from stepline.protocol import sse
from stepline.sdk import client as client_
from stepline.sdk import function as function_
from stepline.sdk import handler as handler_
from stepline.sdk import task_views
from stepline.sdk import tasks as tasks_

FRAMEWORK = "fast_api"
logger = logging.getLogger("stepline.fastapi")


def serve(
    app: fastapi.FastAPI,
    client: client_.Stepline,
    functions: Sequence[function_.Function],
    *,
    path: str = "/api/stepline",
) -> None:
    """Add the serve endpoint for ``functions`` at ``path`` (hidden from the OpenAPI schema)."""
    handler = handler_.ServeHandler(client, functions, FRAMEWORK)

    async def stepline_serve(request: fastapi.Request) -> fastapi.Response:
        neutral = handler_.Request.create(
            request.method, str(request.url), request.headers.items(), await request.body()
        )
        result = await handler.handle(neutral)
        return fastapi.Response(content=result.body, status_code=result.status, headers=result.headers)

    app.add_api_route(path, stepline_serve, methods=list(handler_.METHODS), include_in_schema=False)


def task_routes(client: client_.Stepline, *, owner: Any, prefix: str = "/api/tasks") -> fastapi.APIRouter:
    """Poll, stream and cancel routes for the caller's own tasks; add them with ``app.include_router``.

    ::

        app.include_router(stepline.fastapi.task_routes(client, owner=Depends(auth), prefix="/api/ai-jobs"))

    ``owner`` is a FastAPI dependency resolving to the caller's owner id (a string) or to an
    object with an ``id`` (your ``User``). The routes are ``GET {prefix}/{task_id}`` (the task
    as JSON), ``GET {prefix}/{task_id}/stream`` (server-sent events: every change, closing on a
    terminal state; a client reconnecting with ``Last-Event-ID`` resumes after that version, and
    gets 204 once it has seen the end) and ``POST {prefix}/{task_id}/cancel``. A task the caller does not own is
    answered exactly like one that does not exist: 404.
    """
    router = fastapi.APIRouter(prefix=prefix.rstrip("/"))

    async def owned(task_id: str, caller: Any) -> tasks_.Task:
        owner = task_views.owner_id(caller)
        if owner is None:
            raise _Refused(401, task_views.UNAUTHENTICATED)
        task = await client.tasks.get(task_id)
        if task is None or task.owner != owner:
            raise _Refused(404, task_views.not_found_body(task_id)["error"])
        return task

    async def get_task(task_id: str, caller: Any = owner) -> fastapi.Response:
        async def answer() -> fastapi.Response:
            return fastapi.responses.JSONResponse((await owned(task_id, caller)).to_wire())

        return await _guarded(answer)

    async def stream_task(
        task_id: str, caller: Any = owner, last_event_id: str | None = fastapi.Header(default=None)
    ) -> fastapi.Response:
        async def answer() -> fastapi.Response:
            try:
                seen = sse.last_event_version(last_event_id)
            except ValueError as exc:
                return fastapi.responses.JSONResponse({"error": str(exc), "status": 400}, 400)
            return _stream(client, await owned(task_id, caller), seen)

        return await _guarded(answer)

    async def cancel_task(task_id: str, caller: Any = owner) -> fastapi.Response:
        async def answer() -> fastapi.Response:
            await owned(task_id, caller)
            return fastapi.responses.JSONResponse((await client.tasks.cancel(task_id)).to_wire())

        return await _guarded(answer)

    router.add_api_route("/{task_id}", get_task, methods=["GET"], summary="Get one of your tasks")
    router.add_api_route("/{task_id}/stream", stream_task, methods=["GET"], summary="Stream one of your tasks")
    router.add_api_route("/{task_id}/cancel", cancel_task, methods=["POST"], summary="Cancel one of your tasks")
    return router


def _stream(client: client_.Stepline, task: tasks_.Task, seen: int | None) -> fastapi.Response:
    """The stream of ``task`` for a client that has seen version ``seen`` (``Last-Event-ID``)."""
    if task_views.saw_the_end(task, seen):
        return fastapi.Response(status_code=204)

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for change in client.tasks.watch(task.id, after_version=seen):
                yield sse.KEEPALIVE if change is None else task_views.stream_frame(change)
        except errors.SteplineError as exc:
            # The answer has started: all that is left is to end it; the browser reconnects.
            logger.warning("task stream %s ended early: %s", task.id, exc)

    return fastapi.responses.StreamingResponse(frames(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


async def _guarded(answer: Callable[[], Awaitable[fastapi.Response]]) -> fastapi.Response:
    """``answer()``, or the JSON error the app's user should see: 401 when nobody is signed in,
    404 for a task that is not theirs, 503 while Stepline (its server or database) cannot be reached."""
    try:
        return await answer()
    except _Refused as refused:
        return fastapi.responses.JSONResponse({"error": refused.reason, "status": refused.status}, refused.status)
    except errors.TaskNotFoundError as exc:  # gone between the read and the cancel (retention)
        return fastapi.responses.JSONResponse({"error": str(exc), "status": 404}, status_code=404)
    except (errors.EventSendError, errors.StorageError) as exc:
        logger.warning("task route: Stepline is unavailable: %s", exc)
        body = {"error": task_views.UNAVAILABLE, "status": 503}
        return fastapi.responses.JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
