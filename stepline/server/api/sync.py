"""App sync routes: ``POST /fn/register`` (apps call it) and ``POST /v1/apps/sync`` (ask an app to sync)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from stepline.server import auth
from stepline.server.errors import ApiError

router = APIRouter()


@router.post("/fn/register")
async def register(request: Request, server: auth.ApiServer) -> dict[str, Any]:
    try:
        payload = json.loads(await request.body())
    except ValueError as exc:
        raise ApiError(400, f"the sync body is not valid JSON: {exc}") from None
    return await server.syncer.register(payload, request.headers.get("x-inngest-expected-server-kind"))


class SyncRequest(BaseModel):
    url: str


@router.post("/v1/apps/sync")
async def sync_app(body: SyncRequest, server: auth.ApiServer) -> dict[str, Any]:
    """Ask the app at ``url`` to sync now (what ``stepline dev -u`` does at start)."""
    if not body.url.startswith(("http://", "https://")):
        raise ApiError(400, "url must be the app's http(s) serve URL")
    return await server.syncer.sync_url(body.url)
