"""``GET /health``: the server answers and its database does too."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from stepline import errors
from stepline.server import auth

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    try:
        await auth.runtime_of(request).store.count_queue()
    except errors.StorageError as exc:
        return JSONResponse({"status": 503, "message": f"database unavailable: {exc}"}, status_code=503)
    return JSONResponse({"status": 200, "message": "OK"})
