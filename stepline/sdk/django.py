"""Serve functions from a Django project.

::

    # urls.py
    urlpatterns = [
        stepline.django.serve(client, [tailor_resume, mark_failed], path="api/stepline"),
    ]

The view answers GET, PUT and POST on ``path`` and is exempt from CSRF checks. It
authenticates requests by their ``X-Inngest-Signature`` (signed with
``STEPLINE_SIGNING_KEY``), not by sessions or tokens: if a middleware requires a login for
every URL, let ``path`` through it, or the server's calls will be refused. The host the
server calls must be in ``ALLOWED_HOSTS``. ``async def`` functions run in the request's
thread on a fresh event loop (``asyncio.run``).

``task_routes`` gives the poll, stream and cancel routes of the caller's own tasks (the Django
twin of ``stepline.fastapi.task_routes``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

from django import http, urls
from django.core.handlers import asgi
from django.views.decorators import csrf

from stepline.sdk import client as client_
from stepline.sdk import function as function_
from stepline.sdk import handler as handler_
from stepline.sdk import task_views

FRAMEWORK = "django"


def serve(
    client: client_.Stepline,
    functions: Sequence[function_.Function],
    *,
    path: str = "api/stepline",
) -> urls.URLPattern:
    """A ``urlpatterns`` entry serving ``functions`` at ``path`` (Django style: no leading slash)."""
    handler = handler_.ServeHandler(client, functions, FRAMEWORK)

    @csrf.csrf_exempt
    def stepline_serve(request: http.HttpRequest) -> http.HttpResponse:
        neutral = handler_.Request.create(
            request.method or "GET", request.build_absolute_uri(), request.headers.items(), request.body
        )
        result = handler.handle_sync(neutral)
        response = http.HttpResponse(result.body, status=result.status)
        for name, value in result.headers.items():
            response[name] = value
        return response

    return urls.path(path, stepline_serve, name="stepline-serve")


def task_routes(
    client: client_.Stepline,
    *,
    owner: Callable[[http.HttpRequest], Any],
    prefix: str = "api/tasks",
    csrf_exempt: bool = False,
) -> list[urls.URLPattern]:
    """``urlpatterns`` entries for the poll, stream and cancel routes of the caller's own tasks.

    ::

        urlpatterns = [
            *stepline.django.task_routes(client, owner=lambda request: request.user, prefix="api/ai-jobs"),
        ]

    ``owner`` takes the request and returns the caller's owner id (a string), an object with an
    ``id`` (``request.user``), or None; nobody signed in (None, or Django's anonymous user) is
    answered 401. The routes are ``GET {prefix}/<task_id>`` (the task as JSON),
    ``GET {prefix}/<task_id>/stream`` (server-sent events: every change, closing on a terminal
    state; ``Last-Event-ID`` resumes after that version, and a client that has seen the end gets
    204) and ``POST {prefix}/<task_id>/cancel``. A task the caller does not own is answered
    exactly like one that does not exist: 404.

    The cancel route keeps Django's CSRF protection (send the ``X-CSRFToken`` header, as for any
    POST of a session-authenticated page); ``csrf_exempt=True`` is for APIs authenticated by a
    token in a header, which a cross-site form cannot send. A stream holds one of the server's
    threads until its task ends: with few threads, let browsers poll instead.
    """
    views = task_views.SyncTaskViews(client)

    @csrf.csrf_exempt  # it answers GET only: a POST is refused with 405, not with a CSRF page
    def get_task(request: http.HttpRequest, task_id: str) -> http.HttpResponseBase:
        return _response(request, _only(request, "GET") or views.get(task_id, owner(request)))

    @csrf.csrf_exempt
    def stream_task(request: http.HttpRequest, task_id: str) -> http.HttpResponseBase:
        last_event_id = request.headers.get("Last-Event-ID")
        return _response(request, _only(request, "GET") or views.stream(task_id, owner(request), last_event_id))

    def cancel_task(request: http.HttpRequest, task_id: str) -> http.HttpResponseBase:
        return _response(request, _only(request, "POST") or views.cancel(task_id, owner(request)))

    if csrf_exempt:
        cancel_task = csrf.csrf_exempt(cancel_task)
    return [
        urls.path(task_views.route_path(prefix, "<str:task_id>"), get_task, name="stepline-task"),
        urls.path(task_views.route_path(prefix, "<str:task_id>/stream"), stream_task, name="stepline-task-stream"),
        urls.path(task_views.route_path(prefix, "<str:task_id>/cancel"), cancel_task, name="stepline-task-cancel"),
    ]


def _only(request: http.HttpRequest, method: str) -> task_views.Answer | None:
    """None for ``method``; otherwise 405 in JSON (HEAD too: as on FastAPI's routes, and a HEAD
    of the stream would otherwise follow the task to its end)."""
    return None if request.method == method else task_views.method_not_allowed(request.method or "", method)


def _response(request: http.HttpRequest, answer: task_views.Answer) -> http.HttpResponseBase:
    response: http.HttpResponseBase
    if answer.frames is not None:
        # Under ASGI Django would read a plain iterator whole before sending a byte.
        frames = _each_in_a_thread(answer.frames) if isinstance(request, asgi.ASGIRequest) else answer.frames
        response = http.StreamingHttpResponse(frames, status=answer.status, content_type=answer.media_type)
    elif answer.status == 204:
        response = http.HttpResponse(status=204)
        del response["Content-Type"]
    else:
        response = http.HttpResponse(answer.content, status=answer.status, content_type=answer.media_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response


async def _each_in_a_thread(frames: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """``frames`` for Django under ASGI: each ``next`` blocks, so it runs in a worker thread."""
    try:
        while (frame := await asyncio.to_thread(next, frames, None)) is not None:
            yield frame
    finally:
        await asyncio.to_thread(frames.close)
