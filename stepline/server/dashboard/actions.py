"""The dashboard's actions: POSTs from its own forms only (CSRF token and same-origin check),
each answered with a redirect to the page that shows the result (POST, redirect, GET)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from stepline import errors
from stepline.server import auth
from stepline.server import runtime as runtime_
from stepline.server.dashboard import pages, security, templating
from stepline.server.errors import ApiError

router = APIRouter(include_in_schema=False)

MAX_BULK = 1000
"""Runs one bulk action touches at most; run it again for more."""
MAX_FORM_BYTES = 256 * 1024


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise pages.PageError(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise pages.PageError(400, "the form is not UTF-8") from None
    return dict(pairs)


async def acting(request: Request) -> tuple[runtime_.ServerRuntime, dict[str, str]]:
    """The runtime and the form of an action, once the sender may act and the form is ours."""
    runtime = pages.runtime_for(request)
    form = await read_form(request)
    security.check_csrf(request, form)
    return runtime, form


def back(path: str, **query: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urllib.parse.urlencode(query)}" if query else path, status_code=303)


def run_path(run_id: str) -> str:
    return f"/runs/{urllib.parse.quote(run_id, safe='')}"


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str) -> Response:
    runtime, _ = await acting(request)
    try:
        cancelled = await runtime.cancel_run(run_id)
    except errors.RunNotFoundError as exc:
        raise pages.PageError(404, str(exc)) from None
    return back(run_path(run_id), done="cancelled" if cancelled else "ended")


@router.post("/runs/{run_id}/rerun")
async def rerun(request: Request, run_id: str) -> Response:
    runtime, _ = await acting(request)
    new_id = await _run_action(runtime.rerun(run_id))
    return back(run_path(new_id), done="rerun")


@router.post("/runs/{run_id}/retry")
async def retry(request: Request, run_id: str) -> Response:
    runtime, _ = await acting(request)
    new_id = await _run_action(runtime.retry_run(run_id))
    return back(run_path(new_id), done="retried")


async def _run_action(action: Awaitable[str]) -> str:
    try:
        result = await action
    except (errors.RunNotFoundError, errors.FunctionNotFoundError) as exc:
        raise pages.PageError(404, str(exc)) from None
    except errors.RunStateError as exc:
        raise pages.PageError(409, str(exc)) from None
    return str(result)


@router.post("/runs/bulk")
async def bulk(request: Request) -> Response:
    """Cancel or rerun every run the filters match (newest first, at most ``MAX_BULK``)."""
    runtime, form = await acting(request)
    action = form.get("action")
    if action not in ("cancel", "rerun"):
        raise pages.PageError(400, "action must be cancel or rerun")
    filters = pages.RunFilters({key: value for key, value in form.items() if key != "cursor"})
    done = 0
    while done < MAX_BULK:
        found = await filters.page(runtime, min(200, MAX_BULK - done))
        if not found:
            break
        for run in found:
            try:
                if action == "cancel":
                    done += int(await runtime.cancel_run(run.id))
                else:
                    await runtime.rerun(run.id)  # a rerun is newer than the cursor: never revisited
                    done += 1
            except (errors.RunNotFoundError, errors.FunctionNotFoundError) as exc:
                raise pages.PageError(404, f"stopped at run {run.id} ({exc}) after {done} runs") from None
        filters.cursor = found[-1].id
    return back("/runs", **filters.raw, done="bulk", n=str(done))


@router.post("/events/send")
async def send_event(request: Request) -> Response:
    runtime, form = await acting(request)
    name = form.get("name", "").strip()
    if not name:
        raise pages.PageError(400, "a test event needs a name")
    try:
        data = json.loads(form.get("data") or "{}")
    except ValueError as exc:
        raise pages.PageError(400, f"the event data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise pages.PageError(400, 'the event data must be a JSON object, like {"user_id": 1}')
    try:
        result = await runtime.send_wire([{"name": name, "data": data}])
    except (errors.ConfigurationError, errors.SerializationError) as exc:
        raise pages.PageError(400, str(exc)) from None
    return back(f"/events/{urllib.parse.quote(result.event_ids[0], safe='')}")


@router.post("/apps/sync")
async def sync_app(request: Request) -> Response:
    runtime, form = await acting(request)
    url = form.get("url", "").strip()
    if not url.startswith(("http://", "https://")):
        raise pages.PageError(
            400, "the app's URL must be its http(s) serve URL, like http://127.0.0.1:8000/api/stepline"
        )
    try:
        await runtime.syncer.sync_url(url)
    except ApiError as exc:
        raise pages.PageError(exc.status, exc.message) from None
    return back("/apps", done="synced")


@router.post("/login")
async def login(request: Request) -> Response:
    runtime: runtime_.ServerRuntime = request.app.state.runtime
    token = runtime.settings.dashboard_token
    form = await read_form(request)
    security.check_csrf(request, form)
    target = pages.safe_next(form.get("next"))
    if not token or not auth.dashboard_token_matches(token, form.get("token", "").strip()):
        return templating.render(request, "login.html", status=401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    security.login_cookie(request, response, token)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await read_form(request)
    security.check_csrf(request, form)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response
