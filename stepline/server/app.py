"""The server's ASGI app: starts the engine runtime with the app and stops it after."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from stepline.engine import observe
from stepline.server import dashboard, errors, lane, metrics, runtime, settings
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
    # Added before the dashboard's V1Guard, so that the guard runs first.
    lane_routes = (*tasks.LANE, *events.LANE)
    app.add_middleware(lane.Lane, runtime=server, routes=lane_routes)
    app.openapi = lane.openapi(app, lane_routes)  # type: ignore[method-assign]
    routers = (
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
