"""The dashboard: server-rendered pages at ``/`` for runs, events, tasks, functions and apps, with
actions and live updates. ``install(app)`` mounts it on the server's app.

Package layout: ``pages`` (GET), ``actions`` (POST), ``live`` (server-sent events), ``task_pages``
(the tasks list and page, with their stream and cancel action),
``views`` (records to view models), ``charts`` (the overview), ``security`` (who may see it,
CSRF), ``templating`` (Jinja2), ``templates/`` and ``static/`` (shipped in the wheel).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from stepline.server import runtime as runtime_
from stepline.server.dashboard import actions, charts, live, pages, security, task_pages, templating


def install(app: FastAPI) -> None:
    """Mount the dashboard's routes, static files, error pages, ``/v1`` guard and queue sampler."""
    runtime: runtime_.ServerRuntime = app.state.runtime
    app.state.queue_sampler = charts.QueueSampler()
    for router in (pages.router, actions.router, live.router, task_pages.router):
        app.include_router(router)
    static = resources.files("stepline.server.dashboard").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="dashboard-static")
    app.add_middleware(security.V1Guard, settings=runtime.settings)
    _error_pages(app)
    _sample_while_running(app)


def _error_pages(app: FastAPI) -> None:
    @app.exception_handler(security.AccessDenied)
    async def denied(request: Request, exc: security.AccessDenied) -> Response:
        runtime: runtime_.ServerRuntime = request.app.state.runtime
        if exc.reason == "login":
            if request.method == "GET" and not request.url.path.startswith("/live/"):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)
            return templating.render(
                request,
                "error.html",
                status=401,
                title="Sign in",
                message=("Sign in to the dashboard first (its token was not sent)."),
            )
        return templating.render(request, "refused.html", status=403, host=runtime.settings.host)

    @app.exception_handler(security.CsrfRejected)
    async def csrf(request: Request, exc: security.CsrfRejected) -> Response:
        return templating.render(request, "error.html", status=403, title="Refused", message=str(exc))

    @app.exception_handler(pages.PageError)
    async def page_error(request: Request, exc: pages.PageError) -> Response:
        titles = {400: "Bad request", 404: "Not found", 409: "Not possible", 413: "Too large"}
        return templating.render(
            request, "error.html", status=exc.status, title=titles.get(exc.status, "Error"), message=exc.message
        )


def _quote(path: str) -> str:
    import urllib.parse

    return urllib.parse.quote(path, safe="/")


def _sample_while_running(app: FastAPI) -> None:
    """Run the queue sampler inside the app's lifespan (after the engine has opened the store)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        async with inner(app_):
            runtime: runtime_.ServerRuntime = app_.state.runtime
            async with charts.sampling(app_.state.queue_sampler, runtime.store):
                yield

    app.router.lifespan_context = lifespan
