"""The app ``bench/http.py`` serves its function from: FastAPI, one function of three trivial steps.

Started by the benchmark as its own process (it needs ``STEPLINE_DEV=1`` and
``STEPLINE_BASE_URL`` set to the server)::

    STEPLINE_DEV=1 STEPLINE_BASE_URL=http://127.0.0.1:<server port> \\
        .venv/bin/python -m uvicorn bench.http_app:asgi --host 127.0.0.1 --port <app port>

``GET /bench/calls`` answers how many requests the serve endpoint has received (every one, sync
included) and the most it had in progress at once since the previous ask, so that the benchmark
can report calls per run and how many calls the server made concurrently.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

import stepline
import stepline.fastapi

APP_ID = "bench-http"
EVENT_NAME = "bench/http-three"  # bench/http.py has the same two constants
SERVE_PATH = "/api/stepline"

client = stepline.Stepline(app_id=APP_ID)


async def _one() -> int:
    return 1


async def _two() -> int:
    return 2


async def _three() -> int:
    return 3


@client.function(id="three", trigger=stepline.on_event(EVENT_NAME))
async def three(ctx: stepline.Context) -> int:
    a = await ctx.step.run("s1", _one)
    b = await ctx.step.run("s2", _two)
    c = await ctx.step.run("s3", _three)
    return a + b + c


class CallCounter:
    """Plain ASGI middleware (no per-request task or body copy) counting requests to the serve path,
    and how many were in progress at once at most."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SERVE_PATH:
            await self.app(scope, receive, send)
            return
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def stats(self) -> dict[str, int]:
        """The figures so far; the maximum starts again from the calls in progress."""
        stats = {"calls": self.calls, "max_in_flight": self.max_in_flight}
        self.max_in_flight = self.in_flight
        return stats


app = FastAPI(title="Stepline HTTP bench app")
stepline.fastapi.serve(app, client, [three], path=SERVE_PATH)


@app.get("/bench/calls")
async def calls() -> dict[str, int]:
    """Serve-endpoint requests so far and the most in progress at once since the last ask."""
    return asgi.stats()


asgi = CallCounter(app)
"""What uvicorn serves: the app behind the call counter."""
