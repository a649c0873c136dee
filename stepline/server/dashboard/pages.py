"""The dashboard's pages (GET): overview, runs, a run, events, functions, apps, login."""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from stepline.server import runtime as runtime_
from stepline.server.api import runs as runs_api
from stepline.server.dashboard import charts, security, templating, views
from stepline.server.errors import ApiError
from stepline.storage import records

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
FUNCTION_RECENT = 50


class PageError(Exception):
    """A page that cannot be shown (bad filter, unknown id): rendered as an HTML error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def runtime_for(request: Request) -> runtime_.ServerRuntime:
    """The server runtime, once the request may see the dashboard."""
    runtime: runtime_.ServerRuntime = request.app.state.runtime
    security.check_viewer(request, runtime.settings)
    return runtime


def now_ms(runtime: runtime_.ServerRuntime) -> int:
    return runtime.clock.now_ms()


# runs


class RunFilters:
    """The runs list's filters, parsed from the query string (the same rules as ``GET /v1/runs``)."""

    def __init__(self, params: dict[str, str]) -> None:
        try:
            self.function_id = params.get("function") or None
            self.status = runs_api.parse_status(params.get("status"))
            self.event_id = params.get("event") or None
            self.after = runs_api.parse_time("after", params.get("after"))
            self.before = runs_api.parse_time("before", params.get("before"))
            self.cursor = runs_api.parse_cursor(params.get("cursor"))
        except ApiError as exc:
            raise PageError(400, exc.message) from None
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise PageError(400, "'after' must be earlier than 'before'")
        self.raw = {key: params[key] for key in ("function", "status", "event", "after", "before") if params.get(key)}

    def query(self, **extra: str) -> str:
        return urllib.parse.urlencode({**self.raw, **extra})

    async def page(self, runtime: runtime_.ServerRuntime, limit: int = PAGE_SIZE) -> list[records.RunRecord]:
        return await runtime.store.list_runs(
            function_id=self.function_id,
            status=self.status,
            event_id=self.event_id,
            created_after=self.after,
            created_before=self.before,
            cursor=self.cursor,
            limit=limit,
        )


async def runs_context(runtime: runtime_.ServerRuntime, filters: RunFilters) -> dict[str, Any]:
    found = await filters.page(runtime, PAGE_SIZE + 1)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    now = now_ms(runtime)
    return {
        "rows": [views.run_row(run, now) for run in found],
        "next_query": filters.query(cursor=found[-1].id) if more else None,
    }


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request) -> Response:
    runtime = runtime_for(request)
    filters = RunFilters(dict(request.query_params))
    context = await runs_context(runtime, filters)
    functions = await runtime.store.list_functions()
    return templating.render(
        request,
        "runs.html",
        nav="runs",
        filters=filters.raw,
        statuses=[status.value for status in records.RunStatus],
        functions=[fn.id for fn in functions],
        live_url=None if filters.cursor else f"/live/runs?{filters.query()}",
        notice=_notice(request),
        **context,
    )


async def load_run(runtime: runtime_.ServerRuntime, run_id: str) -> views.RunDetail:
    db = runtime.store
    found = await db.get_run_with_steps(run_id)
    if found is None:
        raise PageError(404, f"no run {run_id!r}")
    run, steps = found
    pauses = await db.run_pauses(run_id) if not run.status.is_terminal else []
    items = await db.run_queue_items(run_id) if not run.status.is_terminal else []
    return views.run_detail(run, steps, pauses, items, now_ms(runtime))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: str) -> Response:
    runtime = runtime_for(request)
    detail = await load_run(runtime, run_id)
    return templating.render(request, "run.html", nav="runs", d=detail, notice=_notice(request))


# events


@router.get("/events", response_class=HTMLResponse)
async def events_page(request: Request) -> Response:
    runtime = runtime_for(request)
    params = request.query_params
    try:
        cursor = runs_api.parse_cursor(params.get("cursor"))
    except ApiError as exc:
        raise PageError(400, exc.message) from None
    name = params.get("name") or None
    found = await runtime.store.list_events(name=name, cursor=cursor, limit=PAGE_SIZE + 1)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    next_query = None
    if more:
        next_query = urllib.parse.urlencode({**({"name": name} if name else {}), "cursor": found[-1].internal_id})
    return templating.render(request, "events.html", nav="events", events=found, name=name or "", next_query=next_query)


@router.get("/events/{event_id:path}", response_class=HTMLResponse)
async def event_page(request: Request, event_id: str) -> Response:
    runtime = runtime_for(request)
    db = runtime.store
    event = await db.get_event(event_id)
    if event is None:
        same = await db.events_by_public_id(event_id, 1)
        if not same:
            raise PageError(404, f"no event {event_id!r}")
        event = same[0]
    others = [other for other in await db.events_by_public_id(event.id, 21) if other.internal_id != event.internal_id]
    now = now_ms(runtime)
    runs = [views.run_row(run, now) for run in await db.runs_for_event(event.internal_id)]
    return templating.render(request, "event.html", nav="events", event=event, runs=runs, duplicates=others[:20])


# functions and apps


@router.get("/functions", response_class=HTMLResponse)
async def functions_page(request: Request) -> Response:
    runtime = runtime_for(request)
    functions = await runtime.store.list_functions()
    rows = [{"fn": fn, "triggers": views.triggers(fn.config), "retries": views.retries(fn.config)} for fn in functions]
    return templating.render(request, "functions.html", nav="functions", rows=rows)


@router.get("/functions/{function_id}", response_class=HTMLResponse)
async def function_page(request: Request, function_id: str) -> Response:
    runtime = runtime_for(request)
    db = runtime.store
    fn = next((found for found in await db.list_functions() if found.id == function_id), None)
    if fn is None:
        raise PageError(404, f"no function {function_id!r}")
    recent = await db.list_runs(function_id=function_id, limit=FUNCTION_RECENT)
    now = now_ms(runtime)
    return templating.render(
        request,
        "function.html",
        nav="functions",
        fn=fn,
        app=await db.get_app(fn.app_id),
        triggers=views.triggers(fn.config),
        retries=views.retries(fn.config),
        flow=views.flow_control(fn.config),
        outcomes=views.outcomes(recent),
        recent=[views.run_row(run, now) for run in recent[:10]],
    )


@router.get("/apps", response_class=HTMLResponse)
async def apps_page(request: Request) -> Response:
    runtime = runtime_for(request)
    apps = await runtime.store.list_apps()
    functions = await runtime.store.list_functions()
    counts = {app.id: sum(1 for fn in functions if fn.app_id == app.id) for app in apps}
    return templating.render(request, "apps.html", nav="apps", apps=apps, counts=counts, notice=_notice(request))


# overview


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    runtime = runtime_for(request)
    sampler: charts.QueueSampler = request.app.state.queue_sampler
    data = await charts.overview(runtime.store, sampler, now_ms(runtime))
    return templating.render(request, "overview.html", nav="overview", o=data)


# login


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    runtime: runtime_.ServerRuntime = request.app.state.runtime
    if not runtime.settings.dashboard_token:
        return RedirectResponse("/", status_code=303)
    return templating.render(request, "login.html", next=safe_next(request.query_params.get("next")), failed=False)


def safe_next(raw: str | None) -> str:
    """Only a path on this server (never ``//host`` or a scheme): an open redirect helps phishing."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    return raw


NOTICES = {
    "cancelled": "Run cancelled.",
    "ended": "The run had already ended.",
    "rerun": "Started a rerun.",
    "retried": "Started a retry from the failed step.",
    "bulk": "Bulk action done.",
    "synced": "App synced.",
}


def _notice(request: Request) -> str:
    key = request.query_params.get("done", "")
    text = NOTICES.get(key, "")
    count = request.query_params.get("n", "")
    if text and count.isdigit():
        text = f"{text} ({count} runs)"
    return text
