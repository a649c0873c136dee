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
"""

from __future__ import annotations

from collections.abc import Sequence

from django import http, urls
from django.views.decorators import csrf

from stepline.sdk import client as client_
from stepline.sdk import function as function_
from stepline.sdk import handler as handler_

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
