"""``GET /health``: the server answers and its database does too."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from stepline import errors
from stepline.server import auth

router = APIRouter()
logger = logging.getLogger("stepline.server")


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    try:
        await auth.runtime_of(request).store.count_queue()
    except errors.StorageError as exc:
        # Anyone may ask: the reason names the database's address, so it goes to the log only.
        logger.warning("health check: database unavailable: %s", exc)
        return JSONResponse({"status": 503, "message": "database unavailable"}, status_code=503)
    executes = auth.runtime_of(request).settings.executes
    return JSONResponse({"status": 200, "message": "OK", "executes": executes})
