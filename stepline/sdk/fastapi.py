"""Serve functions from a FastAPI (or Starlette-based) app.

::

    app = FastAPI()
    stepline.fastapi.serve(app, client, [tailor_resume, mark_failed], path="/api/stepline")

The route answers GET, PUT and POST on ``path``. It authenticates requests by their
``X-Inngest-Signature`` (signed with ``STEPLINE_SIGNING_KEY``), not by cookies or tokens:
if the app has its own authentication middleware, let ``path`` through it unauthenticated,
or the server's calls will be refused before they reach Stepline.
"""

from __future__ import annotations

from collections.abc import Sequence

import fastapi

from stepline.sdk import client as client_
from stepline.sdk import function as function_
from stepline.sdk import handler as handler_

FRAMEWORK = "fast_api"


def serve(
    app: fastapi.FastAPI,
    client: client_.Stepline,
    functions: Sequence[function_.Function],
    *,
    path: str = "/api/stepline",
) -> None:
    """Add the serve endpoint for ``functions`` at ``path`` (hidden from the OpenAPI schema)."""
    handler = handler_.ServeHandler(client, functions, FRAMEWORK)

    async def stepline_serve(request: fastapi.Request) -> fastapi.Response:
        neutral = handler_.Request.create(
            request.method, str(request.url), request.headers.items(), await request.body()
        )
        result = await handler.handle(neutral)
        return fastapi.Response(content=result.body, status_code=result.status, headers=result.headers)

    app.add_api_route(path, stepline_serve, methods=list(handler_.METHODS), include_in_schema=False)
