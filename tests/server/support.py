"""Helpers of the server tests: an app in process (ASGI), a server on a port (for the CLI), seeded rows."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import ulid
import uvicorn
from fastapi import FastAPI

from stepline.server import app as app_
from stepline.server import runtime as runtime_
from stepline.server import settings as settings_
from stepline.storage import open_store, records, store

DAY_MS = 86_400_000
NOW_MS = 1_750_000_000_000
"""Seeded rows are made around this time (June 2025), so windows are easy to reason about."""


@dataclasses.dataclass
class Server:
    app: FastAPI
    runtime: runtime_.ServerRuntime
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def serve(settings: settings_.ServerSettings) -> AsyncIterator[Server]:
    """The app with its lifespan (the engine runtime) running, and a client calling it in process."""
    app = app_.create_app(settings)
    runtime: runtime_.ServerRuntime = app.state.runtime
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield Server(app, runtime, client)


def id_at(millis: int) -> str:
    """A ULID made at ``millis`` (random below the millisecond, as the engine's are)."""
    return str(ulid.ULID.from_bytes(millis.to_bytes(6, "big") + os.urandom(10)))


@dataclasses.dataclass(frozen=True)
class Seed:
    function_id: str = "shop-welcome"
    status: records.RunStatus = records.RunStatus.COMPLETED
    at: int = NOW_MS
    event_name: str = "shop/signup"
    public_id: str | None = None


async def seed(db: store.Store, seeds: Sequence[Seed]) -> list[records.RunRecord]:
    """One event and one run per seed, stored directly (no function needs to exist)."""
    events: list[records.EventRecord] = []
    runs: list[records.RunRecord] = []
    for item in seeds:
        internal_id = id_at(item.at)
        event = records.EventRecord(
            internal_id=internal_id,
            id=item.public_id or internal_id,
            name=item.event_name,
            data={"n": len(events)},
            ts=item.at,
            received_at=item.at,
        )
        terminal = item.status.is_terminal
        error = (
            {"name": "ValueError", "message": "boom", "stack": "..."}
            if item.status is records.RunStatus.FAILED
            else None
        )
        runs.append(
            records.RunRecord(
                id=id_at(item.at),
                function_id=item.function_id,
                event_id=internal_id,
                events=[event.to_wire()],
                status=item.status,
                created_at=item.at,
                started_at=item.at + 1 if item.status is not records.RunStatus.QUEUED else None,
                ended_at=item.at + 2 if terminal else None,
                error=error,
                step_count=2 if terminal else 0,
            )
        )
        events.append(event)
    async with db.transaction() as tx:
        await tx.insert_events(events)
        await tx.insert_runs(runs)
    return runs


def newest_first(runs: Sequence[records.RunRecord]) -> list[str]:
    return sorted((run.id for run in runs), reverse=True)


def seed_sync(database_url: str, seeds: Sequence[Seed]) -> list[records.RunRecord]:
    async def go() -> list[records.RunRecord]:
        db = await open_store(database_url)
        try:
            return await seed(db, seeds)
        finally:
            await db.close()

    return asyncio.run(go())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_on_port(settings: settings_.ServerSettings) -> Iterator[str]:
    """The real server (uvicorn, lifespan on) in a thread on a free port; yields its base URL."""
    port = _free_port()
    settings = dataclasses.replace(settings, port=port)
    config = uvicorn.Config(app_.create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def json_of(reply: httpx.Response) -> Any:
    return reply.json()
