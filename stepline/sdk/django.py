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

from collections.abc import Callable, Sequence
from typing import Any

from django import http, urls
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
    base = prefix.strip("/")

    def get_task(request: http.HttpRequest, task_id: str) -> http.HttpResponseBase:
        return _only(request, "GET") or _response(views.get(task_id, owner(request)))

    def stream_task(request: http.HttpRequest, task_id: str) -> http.HttpResponseBase:
        refused = _only(request, "GET")
        if refused is not None:
            return refused
        return _response(views.stream(task_id, owner(request), request.headers.get("Last-Event-ID")))

    def cancel_task(request: http.HttpRequest, task_id: str) -> http.HttpResponseBase:
        return _only(request, "POST") or _response(views.cancel(task_id, owner(request)))

    if csrf_exempt:
        cancel_task = csrf.csrf_exempt(cancel_task)
    return [
        urls.path(f"{base}/<str:task_id>", get_task, name="stepline-task"),
        urls.path(f"{base}/<str:task_id>/stream", stream_task, name="stepline-task-stream"),
        urls.path(f"{base}/<str:task_id>/cancel", cancel_task, name="stepline-task-cancel"),
    ]


def _only(request: http.HttpRequest, method: str) -> http.HttpResponse | None:
    """None for ``method`` (and HEAD with GET); otherwise 405 with a JSON body and ``Allow``."""
    if request.method == method or (method == "GET" and request.method == "HEAD"):
        return None
    body = {"error": f"method {request.method} is not allowed here (only {method})", "status": 405}
    refused = http.JsonResponse(body, status=405)
    refused["Allow"] = method
    return refused


def _response(answer: task_views.Answer) -> http.HttpResponseBase:
    response: http.HttpResponseBase
    if answer.frames is not None:
        response = http.StreamingHttpResponse(answer.frames, status=answer.status, content_type=answer.media_type)
    else:
        response = http.HttpResponse(answer.content, status=answer.status, content_type=answer.media_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response
