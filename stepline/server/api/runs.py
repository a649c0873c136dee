"""``/v1/runs``: pages of runs, a run with its steps, and the actions on it (cancel, rerun)."""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Annotated, Any

import ulid
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from stepline import errors
from stepline.engine import views
from stepline.server import auth
from stepline.server.errors import ApiError
from stepline.storage import records

router = APIRouter(prefix="/v1/runs")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_ERROR_DESCRIPTIONS = {
    400: "A query parameter is invalid; `error` says which and what is allowed.",
    401: "Missing or wrong bearer token (production mode, or a dev server given a signing key).",
    404: "Nothing has that id.",
    503: "The database is unavailable; try again.",
}


class ErrorBody(BaseModel):
    """Every error answer of the server."""

    error: str = Field(description="What was wrong, and what to do about it.")
    status: int = Field(description="The HTTP status, repeated.")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer with."""
    return {status: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]} for status in statuses}


class RunError(BaseModel):
    name: str = Field(description="The error's class name, e.g. `ValueError` or `Cancelled`.")
    message: str


class RunSummary(BaseModel):
    """A run without its output, steps or triggering events (``GET /v1/runs/{id}`` has them)."""

    id: str = Field(description="The run id, a ULID: sorts by creation time.")
    function_id: str = Field(description="Composite function id, `<app id>-<function id>`.")
    status: records.RunStatus
    event_id: str = Field(description="`internal_id` of the event that started the run.")
    event_name: str | None = Field(description="Name of that event.")
    created_at: int = Field(description="Epoch milliseconds.")
    started_at: int | None = Field(description="When the first call to the function began (epoch ms).")
    ended_at: int | None = Field(description="When the run completed, failed or was cancelled (epoch ms).")
    step_count: int = Field(description="Steps recorded so far.")
    error: RunError | None = Field(description="Why the run failed, was cancelled or was skipped.")


class RunPage(BaseModel):
    data: list[RunSummary] = Field(description="Runs, newest first.")
    cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null when this page is the last one."
    )


def run_summary(run: records.RunRecord) -> RunSummary:
    error = None
    if isinstance(run.error, dict):
        error = RunError(name=str(run.error.get("name") or "Error"), message=str(run.error.get("message") or ""))
    first = run.events[0] if run.events else {}
    return RunSummary(
        id=run.id,
        function_id=run.function_id,
        status=run.status,
        event_id=run.event_id,
        event_name=first.get("name") if isinstance(first, dict) else None,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        step_count=run.step_count,
        error=error,
    )


# query parameters: parsed here so that a bad one is a 400 saying what is allowed


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT} (got {raw!r})")
    return limit


def parse_cursor(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    try:
        return str(ulid.ULID.from_str(raw))
    except ValueError:
        raise ApiError(
            400, f"cursor {raw!r} is not a cursor: pass the 'cursor' value of the previous page unchanged"
        ) from None


def parse_status(raw: str | None) -> records.RunStatus | None:
    if raw is None or raw == "":
        return None
    try:
        return records.RunStatus(raw.lower())
    except ValueError:
        allowed = ", ".join(status.value for status in records.RunStatus)
        raise ApiError(400, f"status must be one of {allowed} (got {raw!r})") from None


def parse_time(name: str, raw: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 time (UTC unless it has an offset)."""
    if raw is None or raw == "":
        return None
    text = raw.strip()
    try:
        if re.fullmatch(r"-?[0-9]{1,18}", text):
            return int(text)
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, f"{name} must be epoch milliseconds or an ISO 8601 time like 2024-05-01T12:00:00Z (got {raw!r})"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _optional(raw: str | None) -> str | None:
    return raw if raw else None


_TIME_HELP = "epoch milliseconds or ISO 8601 (UTC unless it has an offset), compared with the time in the run id"


@router.get(
    "",
    summary="List runs",
    response_model=RunPage,
    response_description="One page of runs, newest first, and the cursor of the next page.",
    responses=error_responses(400, 401, 503),
)
async def list_runs(
    server: auth.ApiServer,
    function_id: Annotated[
        str | None, Query(description="Only runs of this function (`<app id>-<function id>`).")
    ] = None,
    status: Annotated[
        str | None,
        Query(description="Only runs in this status: queued, running, completed, failed, cancelled or skipped."),
    ] = None,
    event_id: Annotated[str | None, Query(description="Only runs started by this event (its `internal_id`).")] = None,
    after: Annotated[str | None, Query(description=f"Only runs created at or after this time: {_TIME_HELP}.")] = None,
    before: Annotated[str | None, Query(description=f"Only runs created before this time: {_TIME_HELP}.")] = None,
    cursor: Annotated[str | None, Query(description="The `cursor` of the previous page.")] = None,
    limit: Annotated[
        str | None, Query(description=f"Runs per page, from 1 to {MAX_LIMIT}; default {DEFAULT_LIMIT}.")
    ] = None,
) -> RunPage:
    """Runs matching every filter given, newest first, a page at a time: pass the answer's
    `cursor` back to get the next page, until it is null."""
    page_size = parse_limit(limit)
    created_after, created_before = parse_time("after", after), parse_time("before", before)
    if created_after is not None and created_before is not None and created_after >= created_before:
        raise ApiError(400, f"after ({after}) must be earlier than before ({before})")
    found = await server.store.list_runs(
        function_id=_optional(function_id),
        status=parse_status(status),
        event_id=_optional(event_id),
        created_after=created_after,
        created_before=created_before,
        cursor=parse_cursor(cursor),
        limit=page_size + 1,  # one more than asked: tells whether a next page exists
    )
    more = len(found) > page_size
    found = found[:page_size]
    return RunPage(data=[run_summary(run) for run in found], cursor=found[-1].id if more else None)


def run_body(run: views.Run) -> dict[str, Any]:
    body = dataclasses.asdict(run)
    body["status"] = run.status.value
    return body


@router.get("/{run_id}")
async def get_run(run_id: str, server: auth.ApiServer) -> dict[str, Any]:
    run = await server.get_run(run_id)
    if run is None:
        raise errors.RunNotFoundError(f"no run {run_id!r}")
    return {"data": run_body(run)}


@router.post("/{run_id}/cancel")
async def cancel_run(run_id: str, server: auth.ApiServer) -> dict[str, Any]:
    cancelled = await server.cancel_run(run_id)
    return {"data": {"run_id": run_id, "cancelled": cancelled}}


@router.post("/{run_id}/rerun")
async def rerun(run_id: str, server: auth.ApiServer) -> dict[str, Any]:
    return {"data": {"run_id": await server.rerun(run_id), "rerun_of": run_id}}


@router.post("/{run_id}/retry")
async def retry(run_id: str, server: auth.ApiServer) -> dict[str, Any]:
    """A new run of a failed run's function and events that keeps its successful step results."""
    return {"data": {"run_id": await server.retry_run(run_id), "retry_of": run_id}}
