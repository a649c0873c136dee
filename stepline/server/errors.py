"""Turning errors into HTTP answers, in one place: ``{"error": ..., "status": ...}``, never a traceback."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stepline import errors

logger = logging.getLogger("stepline.server")


class ApiError(errors.SteplineError):
    """An error with the HTTP status it deserves."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


_STATUS_BY_ERROR: tuple[tuple[type[errors.SteplineError], int], ...] = (
    (errors.RunNotFoundError, 404),
    (errors.TaskNotFoundError, 404),
    (errors.TaskConflictError, 409),
    (errors.FunctionNotFoundError, 404),
    (errors.RunStateError, 409),
    (errors.ConfigurationError, 400),
    (errors.SerializationError, 400),
    (errors.StorageError, 503),
)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(errors.QuotaExceeded)
    async def quota_exceeded(_: Request, exc: errors.QuotaExceeded) -> JSONResponse:
        retry_after = str(max(1, math.ceil(exc.retry_after)))
        body = {"error": str(exc), "status": 429, "feature": exc.feature, "limit": exc.limit}
        return JSONResponse(
            body | {"retry_after": int(retry_after)}, status_code=429, headers={"Retry-After": retry_after}
        )

    @app.exception_handler(errors.SteplineError)
    async def stepline_error(_: Request, exc: errors.SteplineError) -> JSONResponse:
        for kind, status in _STATUS_BY_ERROR:
            if isinstance(exc, kind):
                if status == 503:
                    logger.warning("database unavailable: %s", exc)
                    return error_response(503, f"the database is unavailable, try again: {exc}")
                return error_response(status, str(exc))
        logger.exception("unexpected Stepline error", exc_info=exc)
        return error_response(500, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in exc.errors()
        )
        return error_response(422, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error while serving a request", exc_info=exc)
        return error_response(500, "internal error; the server log has the details")
