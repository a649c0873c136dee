"""The app or the server of ``bench/enqueue.py --breakdown``, timing the parts of an enqueue.

::

    python bench/enqueue_timed.py app|server PORT [DATABASE_URL]

Each process records, per request, how long it held the request (from the moment uvicorn hands
it to the ASGI app until the last byte of the answer is handed back) and how long the one call
on its critical path took: in the app, ``client.tasks.enqueue`` (the hop to the server); in the
server, the store's ``create_task`` (the transaction) and, inside it, its statements (on
PostgreSQL the call of ``stepline_create_task``). ``GET /bench/timings`` answers the
samples so far, in milliseconds, and forgets them.

Unlike a profiler this costs two ``perf_counter`` calls per measured span, so the figures are the
benchmark's usual figures, cut into parts: what the browser waits for, minus what the app held,
is the wire and uvicorn; what the app held, minus its enqueue call, is the app's own work
(FastAPI, auth, the ownership check); and so on down to the database.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench import enqueue_profiled

TIMINGS_PATH = "/bench/timings"
APP_ROUTE = ("POST", "/api/resumes/tailor")
SERVER_ROUTE = ("POST", "/v1/tasks")

P = ParamSpec("P")
R = TypeVar("R")


class Timings:
    """Samples in milliseconds, by the name of what was measured."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, name: str, started: float) -> None:
        self.samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)

    def timed(self, name: str, call: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(call)
        async def timed_call(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                self.add(name, started)

        return timed_call

    def take(self) -> bytes:
        body = json.dumps(self.samples).encode()
        self.samples = {}
        return body


class HeldFor:
    """ASGI middleware: how long one route's requests are held, and ``GET /bench/timings``."""

    def __init__(self, app: ASGIApp, timings: Timings, route: tuple[str, str], name: str) -> None:
        self.app = app
        self.timings = timings
        self.route = route
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == TIMINGS_PATH:
            body = self.timings.take()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if (scope["method"], scope["path"]) != self.route:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_and_time(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.timings.add(self.name, started)

        await self.app(scope, receive, send_and_time)


def build(kind: str, port: int, database_url: str, timings: Timings) -> ASGIApp:
    """The app or the server as ``bench/enqueue_profiled.py`` builds them, with the spans timed."""
    built = enqueue_profiled.build(kind, port, database_url)
    if kind == "app":
        from examples.roleready import app as roleready

        tasks: Any = roleready.client.tasks
        tasks.enqueue = timings.timed("app: enqueue call", tasks.enqueue)
        return HeldFor(built, timings, APP_ROUTE, "app: held the request")
    from stepline.storage.postgres.store import PostgresStore
    from stepline.storage.sqlite.store import SQLiteStore

    for store_class in (SQLiteStore, PostgresStore):
        store: Any = store_class
        store.create_task = timings.timed("server: store.create_task", store.create_task)
    # Inside it, the statements: on PostgreSQL one call of ``stepline_create_task``, committed
    # with it (the connection is in autocommit); on SQLite the writes between BEGIN and COMMIT.
    from stepline.storage.postgres import transaction as pg_transaction_module
    from stepline.storage.sqlite.store import SQLiteTransaction

    pg_transaction: Any = pg_transaction_module
    pg_transaction.create_task = timings.timed("server: the statements", pg_transaction.create_task)
    sqlite_transaction: Any = SQLiteTransaction
    sqlite_transaction.create_task = timings.timed("server: the statements", sqlite_transaction.create_task)
    return HeldFor(built, timings, SERVER_ROUTE, "server: held the request")


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    app = build(kind, port, sys.argv[3] if len(sys.argv) > 3 else "", Timings())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)


if __name__ == "__main__":
    main()
