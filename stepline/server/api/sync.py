"""App sync routes: ``POST /fn/register`` (apps call it) and ``POST /v1/apps/sync`` (ask an app to sync)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stepline.protocol import jsonvalue
from stepline.server import auth
from stepline.server.errors import ApiError
from stepline.server.sync import MAX_FUNCTIONS

router = APIRouter()

MAX_SYNC_BODY_BYTES = 16 * 1024 * 1024
"""Room for the most functions a sync may hold (1,000), each with a generous configuration."""


SYNC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "AppSync",
    "description": "Required: appName, url and functions. Keys may be in any casing (appName, appname, app_name).",
    "properties": {
        "appName": {"type": "string", "minLength": 1},
        "url": {"type": "string", "description": "The app's http(s) serve URL."},
        "functions": {
            "type": "array",
            "maxItems": MAX_FUNCTIONS,
            "items": {
                "type": "object",
                "required": ["id", "triggers", "steps"],
                "description": "A function configuration as the Inngest SDKs send it (docs/reference/http-api.md).",
            },
        },
        "framework": {"type": "string"},
        "sdk": {"type": "string"},
    },
}
"""What ``Syncer.register`` takes, for the OpenAPI document (the route reads its body itself, to
refuse one over 16 MiB before it is all read)."""


@router.post(
    "/fn/register",
    summary="Sync an app's functions",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": SYNC_SCHEMA}}}},
)
async def register(request: Request, server: auth.ApiServer) -> dict[str, Any]:
    try:
        payload = jsonvalue.loads(await _body(request))
    except ValueError as exc:
        raise ApiError(400, f"the sync body is not valid JSON: {exc}") from None
    return await server.syncer.register(payload, request.headers.get("x-inngest-expected-server-kind"))


async def _body(request: Request) -> bytes:
    """The body, refused with 413 once it passes ``MAX_SYNC_BODY_BYTES`` (before it is all read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SYNC_BODY_BYTES:
            raise ApiError(413, f"the sync body is larger than {MAX_SYNC_BODY_BYTES // (1024 * 1024)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


class SyncRequest(BaseModel):
    url: str


@router.post("/v1/apps/sync")
async def sync_app(body: SyncRequest, server: auth.ApiServer) -> dict[str, Any]:
    """Ask the app at ``url`` to sync now (what ``stepline dev -u`` does at start)."""
    if not body.url.startswith(("http://", "https://")):
        raise ApiError(400, "url must be the app's http(s) serve URL")
    return await server.syncer.sync_url(body.url)
