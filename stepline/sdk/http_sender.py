"""Sending events to a Stepline server over HTTP: ``POST {base_url}/e/{event key}``.

What ``client.send`` uses when no embedded ``Engine`` is attached. One send is one request
carrying every event; it is retried (network errors and 5xx, up to 5 attempts with
exponential backoff) with the same ``X-Inngest-Event-ID-Seed``, so the server derives the
same event ids on every attempt and a retry does not start functions twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from stepline import errors
from stepline.sdk import settings as settings_

MAX_ATTEMPTS = 5
BASE_DELAY_S = 0.1
TIMEOUT_S = 30.0

_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _shared_ssl_context() -> ssl.SSLContext:
    """One CA bundle load per process: building it costs more than a request to a local server."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def event_id_seed(now_s: float | None = None) -> str:
    """``<unix ms>,<base64 of 10 random bytes>``: the server derives the events' ids from it."""
    millis = int((time.time() if now_s is None else now_s) * 1000)
    return f"{millis},{base64.b64encode(secrets.token_bytes(10)).decode()}"


def backoff_delay_s(attempt: int, base_s: float = BASE_DELAY_S) -> float:
    """Delay after failed attempt ``attempt`` (0-based): exponential with up to ``base_s`` jitter."""
    return float(base_s * 2**attempt + random.random() * base_s)


class HttpEventSender:
    """An ``EventSender`` for a remote server (the ``client.EventSender`` protocol)."""

    def __init__(
        self,
        settings: settings_.Settings,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay_s: float = BASE_DELAY_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._timeout_s = timeout_s

    def _url(self) -> str:
        key = self._settings.event_key
        if key is None:
            if not self._settings.is_dev:
                raise errors.ConfigurationError(
                    f"cannot send events: {settings_.EVENT_KEY} is not set. Set it to an event key of the server "
                    f"at {self._settings.base_url} (or pass event_key=...), set {settings_.DEV}=1 to send to a "
                    "dev server, or start a stepline.Engine with this client to run functions in-process"
                )
            key = settings_.DEV_EVENT_KEY
        return f"{self._settings.base_url}/e/{urllib.parse.quote(key, safe='')}"

    def _prepare(self, events: list[dict[str, Any]]) -> tuple[str, dict[str, str], bytes]:
        url = self._url()
        now_ms = int(time.time() * 1000)
        body = [event if event.get("ts") else {**event, "ts": now_ms} for event in events]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": settings_.SDK,
            "X-Inngest-SDK": settings_.SDK,
            "X-Inngest-Req-Version": "2",
            "X-Inngest-Event-ID-Seed": event_id_seed(),
        }
        return url, headers, json.dumps(body, allow_nan=False).encode()

    async def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        url, headers, body = self._prepare(events)
        async with httpx.AsyncClient(verify=_shared_ssl_context(), timeout=self._timeout_s) as http:
            return await self._attempts_async(lambda: http.post(url, content=body, headers=headers))

    def send_events_sync(self, events: list[dict[str, Any]]) -> list[str]:
        url, headers, body = self._prepare(events)
        with httpx.Client(verify=_shared_ssl_context(), timeout=self._timeout_s) as http:
            return self._attempts_sync(lambda: http.post(url, content=body, headers=headers))

    async def _attempts_async(self, post: Callable[[], Awaitable[httpx.Response]]) -> list[str]:
        failure = ""
        for attempt in range(self._max_attempts):
            if attempt:
                await asyncio.sleep(backoff_delay_s(attempt - 1, self._base_delay_s))
            try:
                response = await post()
            except httpx.RequestError as exc:
                failure = _network_failure(exc)
                continue
            if response.status_code < 500:
                return _ids(response)
            failure = _status_failure(response)
        raise self._gave_up(failure)

    def _attempts_sync(self, post: Callable[[], httpx.Response]) -> list[str]:
        failure = ""
        for attempt in range(self._max_attempts):
            if attempt:
                time.sleep(backoff_delay_s(attempt - 1, self._base_delay_s))
            try:
                response = post()
            except httpx.RequestError as exc:
                failure = _network_failure(exc)
                continue
            if response.status_code < 500:
                return _ids(response)
            failure = _status_failure(response)
        raise self._gave_up(failure)

    def _gave_up(self, failure: str) -> errors.EventSendError:
        return errors.EventSendError(
            f"could not send events to the Stepline server at {self._settings.base_url} after "
            f"{self._max_attempts} attempts ({failure}); is it running, and is {settings_.BASE_URL} right?"
        )


def _network_failure(exc: httpx.RequestError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _status_failure(response: httpx.Response) -> str:
    return f"HTTP {response.status_code}: {_server_error(response) or response.text[:200]}"


def _server_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        message = body.get("error") or body.get("message")
        if isinstance(message, str) and message:
            return message
    return None


def _ids(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    ids = body.get("ids") if isinstance(body, dict) else None
    accepted = [str(item) for item in ids] if isinstance(ids, list) else []
    if response.status_code >= 400:
        server_error = _server_error(response)
        raise errors.EventSendError(
            f"the Stepline server refused the events (HTTP {response.status_code}): "
            f"{server_error or response.text[:200] or 'no reason given'}",
            status=response.status_code,
            server_error=server_error,
            ids=accepted,
        )
    if not isinstance(ids, list):
        raise errors.EventSendError(
            f"the server's answer to an event send (HTTP {response.status_code}) has no 'ids' list: "
            f"{response.text[:200]!r}; is {settings_.BASE_URL} the address of a Stepline server?",
            status=response.status_code,
        )
    return accepted
