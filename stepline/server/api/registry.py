"""``/v1/apps`` and ``/v1/functions``: what is synced."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from stepline.server import auth

router = APIRouter(prefix="/v1")


@router.get("/apps")
async def list_apps(server: auth.ApiServer) -> dict[str, Any]:
    return {"data": [dataclasses.asdict(app) for app in await server.store.list_apps()]}


@router.get("/functions")
async def list_functions(server: auth.ApiServer) -> dict[str, Any]:
    return {"data": [dataclasses.asdict(fn) for fn in await server.store.list_functions()]}
