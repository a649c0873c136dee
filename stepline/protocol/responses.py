"""Transport-neutral SDK responses and how the server reads them.

The HTTP serve handler turns a ``CallResponse`` into status, headers and body; the HTTP
dispatcher parses them back; the in-process transport passes the object straight through.
``interpret`` is the one place that decides what a response means.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pydantic

from stepline.protocol import models

SDK_NAME = "stepline-py"


@dataclasses.dataclass(slots=True)
class CallResponse:
    status: int
    """200 finished, 206 ops, 4xx/5xx function error."""
    body: Any
    no_retry: bool = False
    """``X-Inngest-No-Retry: true``."""
    retry_after: str | None = None
    """``Retry-After``: seconds (short) or a date."""
    sdk: str | None = SDK_NAME
    """``X-Inngest-SDK``; a response without it did not come from an SDK."""
    request_version: int | None = 2


@dataclasses.dataclass(slots=True)
class Completed:
    output: Any


@dataclasses.dataclass(slots=True)
class Ops:
    ops: list[models.Op]
    no_retry: bool
    retry_after_ms: int | None


@dataclasses.dataclass(slots=True)
class Errored:
    error: dict[str, Any]
    retriable: bool
    retry_after_ms: int | None


Outcome = Completed | Ops | Errored

_MIN_RETRY_AFTER_MS = 1_000
_MAX_RETRY_AFTER_MS = 24 * 3_600_000


def parse_retry_after(value: str | None, now_ms: int) -> int | None:
    """Delay in ms from a ``Retry-After`` value (integer seconds, or a date), clamped to [1 s, 24 h]."""
    if not value:
        return None
    text = value.strip()
    delay: int | None = None
    if len(text) <= 7 and text.isdigit():
        delay = int(text) * 1000
    else:
        when = _parse_date(text)
        if when is not None:
            delay = int(when.timestamp() * 1000) - now_ms
    if delay is None:
        return None
    return max(_MIN_RETRY_AFTER_MS, min(_MAX_RETRY_AFTER_MS, delay))


def _parse_date(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def interpret(response: CallResponse, now_ms: int) -> Outcome:
    """What a response means for the run."""
    retry_after_ms = parse_retry_after(response.retry_after, now_ms)
    if response.sdk is None:
        return Errored(
            models.error_body("TransportError", f"response (HTTP {response.status}) did not come from an SDK"),
            retriable=True,
            retry_after_ms=retry_after_ms,
        )
    if response.status == 200:
        return Completed(response.body)
    if response.status == 206:
        items = response.body if isinstance(response.body, list) else [response.body]
        try:
            ops = [models.Op.model_validate(item) for item in items]
        except pydantic.ValidationError as exc:
            return Errored(
                models.error_body("ProtocolError", f"malformed ops in 206 response: {exc}"),
                retriable=False,
                retry_after_ms=None,
            )
        return Ops(ops, no_retry=response.no_retry, retry_after_ms=retry_after_ms)
    return Errored(_error_from_body(response), retriable=not response.no_retry, retry_after_ms=retry_after_ms)


def _error_from_body(response: CallResponse) -> dict[str, Any]:
    body = response.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return {k: v for k, v in body.items() if k in ("name", "message", "stack", "code", "data", "cause")} | {
            "name": str(body.get("name") or "Error")
        }
    return models.error_body("Error", f"function call failed with HTTP {response.status}: {body!r}"[:2000])
