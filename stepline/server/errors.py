"""Turning errors into HTTP answers, in one place: ``{"error": ..., "status": ...}``, never a traceback."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

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
    (errors.StorageValueError, 400),
    (errors.StorageError, 503),
)


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What an error answers: its status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def response(self) -> JSONResponse:
        return _AsciiJSONResponse(self.body, status_code=self.status, headers=self.headers or None)


class _AsciiJSONResponse(JSONResponse):
    """Escapes every non-ASCII character: an error may quote the bad input it refuses, lone
    surrogates included, which UTF-8 (Starlette's encoding) cannot hold."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> ErrorAnswer:
    return ErrorAnswer(status, {"error": message, "status": status}, headers or {})


def answer_for(exc: Exception) -> ErrorAnswer:
    """The answer to an error raised while serving a request, wherever it was served (the FastAPI
    routes and ``lane``): the one place a server error becomes HTTP."""
    if isinstance(exc, ApiError):
        return _plain(exc.status, exc.message, exc.headers)
    if isinstance(exc, errors.QuotaExceeded):
        retry_after = max(1, math.ceil(exc.retry_after))
        body = {"error": str(exc), "status": 429, "feature": exc.feature, "limit": exc.limit}
        return ErrorAnswer(429, body | {"retry_after": retry_after}, {"Retry-After": str(retry_after)})
    if isinstance(exc, errors.SteplineError):
        for kind, status in _STATUS_BY_ERROR:
            if isinstance(exc, kind):
                if status == 503:
                    # The detail names the database's host and the statement: for the log only.
                    logger.warning("database unavailable: %s", exc)
                    return _plain(503, "the database is unavailable, try again")
                return _plain(status, str(exc))
        logger.exception("unexpected Stepline error", exc_info=exc)
        return _plain(500, str(exc))
    if isinstance(exc, RequestValidationError):
        return _plain(422, f"invalid request: {describe_problems(exc.errors(), prefix=())}")
    if isinstance(exc, StarletteHTTPException):  # e.g. 405, whose Allow header must reach the client
        return _plain(exc.status_code, str(exc.detail), dict(exc.headers or {}))
    logger.exception("unhandled error while serving a request", exc_info=exc)
    return _plain(500, "internal error; the server log has the details")


def describe_problems(problems: Sequence[Any], prefix: tuple[str, ...]) -> str:
    """pydantic's validation problems as ``field.path: what is wrong; ...``."""
    return "; ".join(
        f"{'.'.join((*prefix, *(str(part) for part in problem['loc'])))}: {problem['msg']}" for problem in problems
    )


def install(app: FastAPI) -> None:
    async def answer(_: Request, exc: Exception) -> JSONResponse:
        return answer_for(exc).response()

    for kind in (ApiError, errors.QuotaExceeded, errors.SteplineError, RequestValidationError):
        app.add_exception_handler(kind, answer)
    app.add_exception_handler(StarletteHTTPException, answer)
    app.add_exception_handler(Exception, answer)
