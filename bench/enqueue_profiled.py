"""The app or the server of ``bench/enqueue.py --profile``, under pyinstrument, in one process.

::

    python bench/enqueue_profiled.py app|server OUTPUT.txt PORT [DATABASE_URL]

Profiling starts at once; ``POST /bench/profile`` stops it and writes ``OUTPUT.txt`` (and
``OUTPUT.html``). A route, and not the end of the process, because uvicorn re-raises the signal
that stopped it, which ends the process before an ``atexit`` writer could run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import uvicorn
from pyinstrument import Profiler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse


def build(kind: str, port: int, database_url: str) -> Starlette:
    if kind == "app":
        from examples.roleready.app import app

        return app
    from stepline.server import settings as settings_
    from stepline.server.app import create_app

    settings = settings_.ServerSettings(dev=True, database_url=database_url, host="127.0.0.1", port=port)
    server: Starlette = create_app(settings)
    return server


def main() -> None:
    kind, output, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    app = build(kind, port, sys.argv[4] if len(sys.argv) > 4 else "")
    profiler = Profiler(async_mode="disabled")

    async def stop(_: Request) -> PlainTextResponse:
        if profiler.is_running:  # on the event loop's thread, where it was started
            profiler.stop()
            # Blocking writes on purpose: the measurement is over, and the profiler must be stopped here.
            output.write_text(profiler.output_text(unicode=True, show_all=os.environ.get("PROFILE_ALL") == "1"))  # noqa: ASYNC240
            output.with_suffix(".html").write_text(profiler.output_html())
        return PlainTextResponse(str(output))

    app.add_route("/bench/profile", stop, methods=["POST"])
    profiler.start()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
