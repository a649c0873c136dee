"""Serve functions from a Flask app.

::

    app = Flask(__name__)
    stepline.flask.serve(app, client, [tailor_resume, mark_failed], path="/api/stepline")

The view answers GET, PUT and POST on ``path``. It authenticates requests by their
``X-Inngest-Signature`` (signed with ``STEPLINE_SIGNING_KEY``), not by cookies or tokens:
if the app checks authentication in a ``before_request`` hook or a WSGI middleware, let
``path`` through it unauthenticated, or the server's calls will be refused. ``async def``
functions run in the request's thread on a fresh event loop (``asyncio.run``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flask

from stepline.sdk import client as client_
from stepline.sdk import function as function_
from stepline.sdk import handler as handler_

FRAMEWORK = "flask"


def serve(
    app: flask.Flask,
    client: client_.Stepline,
    functions: Sequence[function_.Function],
    *,
    path: str = "/api/stepline",
) -> None:
    """Add the serve endpoint for ``functions`` at ``path``."""
    handler = handler_.ServeHandler(client, functions, FRAMEWORK)

    def stepline_serve() -> flask.Response:
        request = flask.request
        neutral = handler_.Request.create(request.method, request.url, request.headers.items(), request.get_data())
        result = handler.handle_sync(neutral)
        return flask.Response(result.body, status=result.status, headers=result.headers)

    app.add_url_rule(path, endpoint=f"stepline_serve:{path}", view_func=stepline_serve, methods=list(handler_.METHODS))
