"""A real, minimal HTTP server on 127.0.0.1 that records what the SDK sends it.

It answers ``POST /fn/register`` and ``POST /e/{key}`` the way a Stepline server would, from
a queue of canned answers, and is served by uvicorn in a background thread on a random port:
the SDK under test talks to it over real sockets.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclasses.dataclass(slots=True)
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names."""
    body: Any


@dataclasses.dataclass(slots=True)
class FakeServer:
    base_url: str = ""
    calls: list[Recorded] = dataclasses.field(default_factory=list)
    answers: dict[str, list[tuple[int, Any]]] = dataclasses.field(default_factory=dict)
    """Per route (``register`` or ``events``): answers to give first, in order."""

    def answer(self, route: str, status: int, body: Any) -> None:
        self.answers.setdefault(route, []).append((status, body))

    def calls_to(self, prefix: str) -> list[Recorded]:
        return [call for call in self.calls if call.path.startswith(prefix)]

    def _next(self, route: str, default: tuple[int, Any]) -> tuple[int, Any]:
        queue = self.answers.get(route) or []
        return queue.pop(0) if queue else default

    async def _record(self, request: Request) -> Recorded:
        raw = await request.body()
        call = Recorded(
            request.url.path,
            dict(request.query_params),
            {name.lower(): value for name, value in request.headers.items()},
            json.loads(raw) if raw else None,
        )
        self.calls.append(call)
        return call

    async def register(self, request: Request) -> Response:
        await self._record(request)
        status, body = self._next("register", (200, {"ok": True}))
        return _respond(status, body)

    async def events(self, request: Request) -> Response:
        call = await self._record(request)
        count = len(call.body) if isinstance(call.body, list) else 1
        status, body = self._next("events", (200, {"ids": [f"evt-{n}" for n in range(count)], "status": 200}))
        return _respond(status, body)


def _respond(status: int, body: Any) -> Response:
    if isinstance(body, bytes):
        return Response(body, status_code=status, media_type="text/plain")
    return JSONResponse(body, status_code=status)


@contextmanager
def running() -> Iterator[FakeServer]:
    """Start a fake server; yields it with ``base_url`` set; stops it on exit."""
    fake = FakeServer()
    app = Starlette(
        routes=[
            Route("/fn/register", fake.register, methods=["POST"]),
            Route("/e/{key}", fake.events, methods=["POST"]),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake server did not start")
        time.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
