"""Live updates over server-sent events: the runs list and a run page re-rendered as they change.

Each stream polls the database (one indexed read per ``POLL_S``) and sends the re-rendered
fragment only when it differs from the last one sent, so an idle page costs one small query
a second and no traffic. Polling the store rather than listening for engine events keeps the
page right whichever server of a cluster ran the step. A stream ends after ``MAX_STREAM_S``
(the browser's ``EventSource`` reconnects by itself), so no connection outlives a server
shutdown for long; a run's stream ends as soon as the run has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from stepline import errors
from stepline.server.dashboard import pages, security, templating

router = APIRouter(include_in_schema=False)

POLL_S = 0.5
MAX_STREAM_S = 30.0
RETRY_MS = 1000


def message(event: str, data: str) -> bytes:
    """One SSE message; every line of ``data`` gets its own ``data:`` prefix."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    headers = {**security.SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/live/runs")
async def live_runs(request: Request) -> Response:
    runtime = pages.runtime_for(request)
    filters = pages.RunFilters({key: value for key, value in request.query_params.items() if key != "cursor"})

    async def body() -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        last = None
        deadline = time.monotonic() + MAX_STREAM_S
        while time.monotonic() < deadline:
            try:
                context = await pages.runs_context(runtime, filters)
            except errors.StorageError:
                await asyncio.sleep(POLL_S * 4)
                continue
            html = templating.render_fragment("_run_rows.html", **context)
            if html != last:
                yield message("rows", html)
                last = html
            await asyncio.sleep(POLL_S)

    return _stream(body())


@router.get("/live/runs/{run_id}")
async def live_run(request: Request, run_id: str) -> Response:
    runtime = pages.runtime_for(request)
    await pages.load_run(runtime, run_id)  # 404 page now rather than an empty stream

    async def body() -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        last = None
        deadline = time.monotonic() + MAX_STREAM_S
        while time.monotonic() < deadline:
            try:
                detail = await pages.load_run(runtime, run_id)
            except errors.StorageError:
                await asyncio.sleep(POLL_S * 4)
                continue
            html = templating.render_fragment("_run_live.html", d=detail, csrf=security.csrf_token(request))
            if html != last:
                yield message("run", html)
                last = html
            if not detail.live:
                yield message("end", detail.run.status.value)
                return
            await asyncio.sleep(POLL_S)

    return _stream(body())
