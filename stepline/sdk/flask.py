"""Serve functions from a Flask app.

::

    app = Flask(__name__)
    stepline.flask.serve(app, client, [tailor_resume, mark_failed], path="/api/stepline")

The view answers GET, PUT and POST on ``path``. It authenticates requests by their
``X-Inngest-Signature`` (signed with ``STEPLINE_SIGNING_KEY``), not by cookies or tokens:
if the app checks authentication in a ``before_request`` hook or a WSGI middleware, let
``path`` through it unauthenticated, or the server's calls will be refused. ``async def``
functions run in the request's thread on a fresh event loop (``asyncio.run``).

``task_routes`` adds the poll, stream and cancel routes of the caller's own tasks (the Flask
twin of ``stepline.fastapi.task_routes``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import flask

from stepline.sdk import client as client_
from stepline.sdk import function as function_
from stepline.sdk import handler as handler_
from stepline.sdk import task_views

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


def task_routes(
    client: client_.Stepline,
    *,
    owner: Callable[[], Any],
    url_prefix: str = "/api/tasks",
    name: str | None = None,
) -> flask.Blueprint:
    """Poll, stream and cancel routes for the caller's own tasks, as a blueprint to register.

    ::

        def current_user_id() -> str | None:
            return flask.g.user.id if "user" in flask.g else None

        app.register_blueprint(stepline.flask.task_routes(client, owner=current_user_id, url_prefix="/api/ai-jobs"))

    ``owner`` is called in each request and returns the caller's owner id (a string), an object
    with an ``id`` (your ``User``), or None when nobody is signed in (answered 401); it may also
    refuse with ``flask.abort(401)`` itself. The routes are ``GET {url_prefix}/<task_id>`` (the
    task as JSON), ``GET {url_prefix}/<task_id>/stream`` (server-sent events: every change,
    closing on a terminal state; ``Last-Event-ID`` resumes after that version, and a client that
    has seen the end gets 204) and ``POST {url_prefix}/<task_id>/cancel``. A task the caller does
    not own is answered exactly like one that does not exist: 404.

    A stream holds one of the WSGI server's threads until its task ends (or the browser goes
    and the next change finds it gone): with few threads, let browsers poll instead.
    """
    views = task_views.SyncTaskViews(client)
    blueprint = flask.Blueprint(
        name or "stepline_tasks_" + (re.sub(r"\W", "_", url_prefix.strip("/")) or "root"), __name__
    )

    def get_task(task_id: str) -> flask.Response:
        return _response(_only("GET") or views.get(task_id, owner()))

    def stream_task(task_id: str) -> flask.Response:
        last_event_id = flask.request.headers.get("Last-Event-ID")
        return _response(_only("GET") or views.stream(task_id, owner(), last_event_id))

    def cancel_task(task_id: str) -> flask.Response:
        return _response(_only("POST") or views.cancel(task_id, owner()))

    # Every method reaches the views, which refuse the wrong ones in JSON (Flask's 405 is HTML).
    rules = (("<task_id>", get_task), ("<task_id>/stream", stream_task), ("<task_id>/cancel", cancel_task))
    for tail, view in rules:
        path = "/" + task_views.route_path(url_prefix, tail)
        blueprint.add_url_rule(path, view.__name__, view, methods=_METHODS, provide_automatic_options=False)
    return blueprint


_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _only(method: str) -> task_views.Answer | None:
    """None for ``method`` (and HEAD with GET: werkzeug answers it without the body, and never
    starts a stream's frames); otherwise 405 in JSON."""
    asked = flask.request.method
    if asked == method or (method == "GET" and asked == "HEAD"):
        return None
    return task_views.method_not_allowed(asked, method)


def _response(answer: task_views.Answer) -> flask.Response:
    if answer.status == 204:
        response = flask.Response(status=204)
        del response.headers["Content-Type"]
        return response
    content: Any = answer.content if answer.frames is None else answer.frames
    return flask.Response(content, status=answer.status, headers=dict(answer.headers), mimetype=answer.media_type)
