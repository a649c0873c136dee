"""The server's ASGI app: starts the engine runtime with the app and stops it after."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from stepline.engine import observe
from stepline.server import dashboard, errors, metrics, runtime, settings
from stepline.server.api import events, events_read, health, registry, runs, sync, tasks

VERSION = "0.1.0"


def create_app(server_settings: settings.ServerSettings) -> FastAPI:
    server = runtime.ServerRuntime(server_settings)
    if server_settings.otel:
        observe.enable_tracing()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="Stepline", version=VERSION, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.runtime = server
    errors.install(app)
    # Routes are matched in order, one pattern at a time: the routes on a request's path (ingest,
    # tasks) come first, which spares each of their requests the patterns of the rest.
    routers = (
        events.router,
        tasks.router,
        health.router,
        sync.router,
        runs.router,
        registry.router,
        events_read.router,
    )
    for router in routers:
        app.include_router(router)
    app.include_router(metrics.router)
    dashboard.install(app)
    return app
