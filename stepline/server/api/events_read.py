"""``GET /v1/events``: pages of stored events, and one event with the runs it started."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from stepline.server import auth
from stepline.server.api import runs as runs_api
from stepline.server.errors import ApiError
from stepline.storage import records

router = APIRouter(prefix="/v1/events")

MAX_DUPLICATES = 20


class Event(BaseModel):
    internal_id: str = Field(description="Stepline's own id for this stored event, a ULID: unique.")
    id: str = Field(
        description="The public id: the sender's `id`, else `internal_id`. Sending an id again stores the event "
        "again but starts no run twice within 24 hours."
    )
    name: str
    data: dict[str, Any]
    user: dict[str, Any]
    ts: int = Field(description="The event's time (epoch ms): the sender's `ts`, else when it was received.")
    v: str | None = Field(description="The sender's event version, if any.")
    received_at: int = Field(description="When the server stored it (epoch ms).")


class EventPage(BaseModel):
    data: list[Event] = Field(description="Events, newest first.")
    cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null when this page is the last one."
    )


class EventDetail(Event):
    runs: list[runs_api.RunSummary] = Field(description="The runs this event started, oldest first.")
    duplicates: list[str] = Field(
        description=f"`internal_id`s of other stored events with the same public id, newest first "
        f"(at most {MAX_DUPLICATES})."
    )


class EventAnswer(BaseModel):
    data: EventDetail


def event_body(event: records.EventRecord) -> Event:
    return Event(
        internal_id=event.internal_id,
        id=event.id,
        name=event.name,
        data=event.data,
        user=event.user,
        ts=event.ts,
        v=event.v,
        received_at=event.received_at,
    )


@router.get(
    "",
    summary="List events",
    response_model=EventPage,
    response_description="One page of stored events, newest first, and the cursor of the next page.",
    responses=runs_api.error_responses(400, 401, 503),
)
async def list_events(
    server: auth.ApiServer,
    name: Annotated[str | None, Query(description="Only events with this name.")] = None,
    cursor: Annotated[str | None, Query(description="The `cursor` of the previous page.")] = None,
    limit: Annotated[
        str | None,
        Query(description=f"Events per page, from 1 to {runs_api.MAX_LIMIT}; default {runs_api.DEFAULT_LIMIT}."),
    ] = None,
) -> EventPage:
    """Every stored event (including the `inngest/...` events runs emit), newest first, a page
    at a time: pass the answer's `cursor` back to get the next page, until it is null."""
    page_size = runs_api.parse_limit(limit)
    found = await server.store.list_events(name=name or None, cursor=runs_api.parse_cursor(cursor), limit=page_size + 1)
    more = len(found) > page_size
    found = found[:page_size]
    return EventPage(data=[event_body(event) for event in found], cursor=found[-1].internal_id if more else None)


@router.get(
    "/{event_id:path}",
    summary="Get an event and the runs it started",
    response_model=EventAnswer,
    response_description="The event, the runs it started, and other events sent with the same public id.",
    responses=runs_api.error_responses(401, 404, 503),
)
async def get_event(event_id: str, server: auth.ApiServer) -> EventAnswer:
    """`event_id` is either the event's `internal_id` or its public `id` (what `POST /e/{key}`
    answered). When several stored events share that public id, the newest is shown and the
    others are listed in `duplicates`."""
    store = server.store
    event = await store.get_event(event_id)
    same_id = await store.events_by_public_id(event.id if event else event_id, MAX_DUPLICATES + 1)
    if event is None:
        if not same_id:
            raise ApiError(
                404, f"no event {event_id!r}: pass the id that POST /e/{{event_key}} answered, or an internal_id"
            )
        event = same_id[0]
    runs = await store.runs_for_event(event.internal_id)
    duplicates = [other.internal_id for other in same_id if other.internal_id != event.internal_id]
    detail = EventDetail(
        **event_body(event).model_dump(),
        runs=[runs_api.run_summary(run) for run in runs],
        duplicates=duplicates[:MAX_DUPLICATES],
    )
    return EventAnswer(data=detail)
