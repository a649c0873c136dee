"""``client.tasks`` over HTTP: the server's ``/v1/tasks`` routes.

Connections are kept open between calls (one pool per event loop, one for sync callers): an
enqueue sits on a web request's critical path, and a new TCP connection per call would cost
more than the enqueue itself. Async calls go through aiohttp, whose per-request CPU cost is a
fraction of httpx's (the same reason the server dispatches with it); sync callers and streams
use httpx. Each loop's aiohttp session is closed when that loop shuts down (see
``_close_with_loop``), so apps never see "unclosed session" warnings. Enqueues carry a
client-chosen task id, so retrying one after a network error or a 5xx returns the task the
first attempt created instead of a second task.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx

from stepline import errors
from stepline.protocol import sse
from stepline.sdk import http_sender
from stepline.sdk import settings as settings_

MAX_ATTEMPTS = 4
TIMEOUT_S = 10.0
STREAM_READ_TIMEOUT_S = 3 * sse.KEEPALIVE_S
"""A task stream is quiet until the task changes, but the server writes a keep-alive every
``sse.KEEPALIVE_S``: three missed ones mean the server (or the way to it) hangs."""
_STREAM_TIMEOUT = httpx.Timeout(TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
_STREAM_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)
"""Streams hold their connection for as long as they follow a task: no bound on how many, and
never in the pool of the short calls (one stream per browser would otherwise starve them)."""


class _Reply:
    """An aiohttp answer, read whole, with the few ``httpx.Response`` members the SDK reads."""

    def __init__(self, status_code: int, content: bytes, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


_SESSIONS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop,
    dict[tuple[str, tuple[tuple[str, str], ...]], tuple[aiohttp.ClientSession, AsyncIterator[None]]],
] = weakref.WeakKeyDictionary()
"""The aiohttp sessions of each running loop, by server URL and headers."""


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """An async generator started on the session's loop and never resumed: when the loop shuts
    down (``asyncio.run``, uvicorn), it closes every live async generator, which runs this
    ``finally`` on that loop, the one place an aiohttp session can be closed properly."""
    try:
        yield
    finally:
        await session.close()


class HttpTaskBackend:
    """A ``TaskBackend`` for a remote server (``stepline.sdk.tasks.TaskBackend``)."""

    def __init__(self, settings: settings_.Settings, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        self._settings = settings
        self._max_attempts = max_attempts
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._sync_client: httpx.Client | None = None
        self._sync_stream_client: httpx.Client | None = None
        self._lock = threading.Lock()

    # connection pools
    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": settings_.SDK, "X-Inngest-SDK": settings_.SDK}
        key = self._settings.event_key or self._settings.signing_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif not self._settings.is_dev:
            raise errors.ConfigurationError(
                f"cannot reach the task API: {settings_.EVENT_KEY} is not set. Set it to an event key of the server "
                f"at {self._settings.base_url} (or pass event_key=...), or set {settings_.DEV}=1 for a dev server"
            )
        return headers

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(  # for streams only: short calls go through aiohttp
                base_url=self._settings.base_url,
                headers=self._headers(),
                timeout=_STREAM_TIMEOUT,
                limits=_STREAM_LIMITS,
                verify=http_sender._shared_ssl_context(),
            )
            self._async_clients[loop] = client
        return client

    async def _session(self) -> aiohttp.ClientSession:
        # aiohttp binds a session to the loop it was made on: one per loop (and per server and
        # key), kept with the loop rather than with this object, so that dropping a client can
        # never leave a session to the garbage collector unclosed.
        headers = self._headers()
        key = (self._settings.base_url, tuple(sorted(headers.items())))
        per_loop = _SESSIONS.setdefault(asyncio.get_running_loop(), {})
        found = per_loop.get(key)
        if found is not None and not found[0].closed:
            return found[0]
        session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        closer = _close_with_loop(session)
        await anext(closer)  # registers the generator with this loop's shutdown
        per_loop[key] = (session, closer)
        return session

    def _client_sync(self) -> httpx.Client:
        with self._lock:
            if self._sync_client is None:
                self._sync_client = self._new_client_sync(httpx.Timeout(TIMEOUT_S), httpx.Limits())
            return self._sync_client

    def _stream_client_sync(self) -> httpx.Client:
        with self._lock:
            if self._sync_stream_client is None:
                self._sync_stream_client = self._new_client_sync(_STREAM_TIMEOUT, _STREAM_LIMITS)
            return self._sync_stream_client

    def _new_client_sync(self, timeout: httpx.Timeout, limits: httpx.Limits) -> httpx.Client:
        return httpx.Client(
            base_url=self._settings.base_url,
            headers=self._headers(),
            timeout=timeout,
            limits=limits,
            verify=http_sender._shared_ssl_context(),
        )

    # the TaskBackend verbs
    async def enqueue_task(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._request("POST", "/v1/tasks", body)
        return _task_or_raise(response, "enqueue the task")

    def enqueue_task_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._request_sync("POST", "/v1/tasks", body)
        return _task_or_raise(response, "enqueue the task")

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        response = await self._request("GET", _task_path(task_id))
        return None if response.status_code == 404 else _task_or_raise(response, "read the task")

    def get_task_sync(self, task_id: str) -> dict[str, Any] | None:
        response = self._request_sync("GET", _task_path(task_id))
        return None if response.status_code == 404 else _task_or_raise(response, "read the task")

    async def list_tasks(
        self, owner: str | None, status: str | None, cursor: str | None, limit: int, *, kind: str | None = None
    ) -> dict[str, Any]:
        response = await self._request("GET", _list_path(owner, status, cursor, limit, kind))
        return _task_or_raise(response, "list tasks")

    def list_tasks_sync(
        self, owner: str | None, status: str | None, cursor: str | None, limit: int, *, kind: str | None = None
    ) -> dict[str, Any]:
        response = self._request_sync("GET", _list_path(owner, status, cursor, limit, kind))
        return _task_or_raise(response, "list tasks")

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        response = await self._request("POST", _task_path(task_id) + "/cancel", {})
        return _task_or_raise(response, "cancel the task")

    def cancel_task_sync(self, task_id: str) -> dict[str, Any]:
        response = self._request_sync("POST", _task_path(task_id) + "/cancel", {})
        return _task_or_raise(response, "cancel the task")

    async def report_progress(self, task_id: str, progress: float, message: str | None) -> bool:
        response = await self._request("POST", _task_path(task_id) + "/progress", _progress(progress, message))
        return bool(_task_or_raise(response, "report progress").get("recorded"))

    def report_progress_sync(self, task_id: str, progress: float, message: str | None) -> bool:
        response = self._request_sync("POST", _task_path(task_id) + "/progress", _progress(progress, message))
        return bool(_task_or_raise(response, "report progress").get("recorded"))

    async def stream_task(
        self, task_id: str, after_version: int | None = None, *, ticks: bool = False
    ) -> AsyncIterator[dict[str, Any] | None]:
        client = self._async_client()
        try:
            async with client.stream("GET", **_stream_request(task_id, after_version)) as response:
                if response.status_code == 204:  # resumed after the task's last change: nothing to send
                    return
                if response.status_code >= 400:
                    await response.aread()
                    _task_or_raise(response, "stream the task")
                async for event, data in sse.read_frames(response.aiter_lines(), comments=ticks):
                    if _is_stream_item(event, data):
                        yield data
        except httpx.RequestError as exc:
            raise self._unreachable(http_sender._network_failure(exc)) from None

    def stream_task_sync(
        self, task_id: str, after_version: int | None = None, *, ticks: bool = False
    ) -> Iterator[dict[str, Any] | None]:
        client = self._stream_client_sync()
        try:
            with client.stream("GET", **_stream_request(task_id, after_version)) as response:
                if response.status_code == 204:  # resumed after the task's last change: nothing to send
                    return
                if response.status_code >= 400:
                    response.read()
                    _task_or_raise(response, "stream the task")
                for event, data in sse.read_frames_sync(response.iter_lines(), comments=ticks):
                    if _is_stream_item(event, data):
                        yield data
        except httpx.RequestError as exc:
            raise self._unreachable(http_sender._network_failure(exc)) from None

    # requests
    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> _Reply:
        session = await self._session()
        url = self._settings.base_url + path  # base_url may carry a path prefix (a proxy)
        content = None if body is None else json.dumps(body, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        failure = ""
        for attempt in range(self._max_attempts):
            if attempt:
                await asyncio.sleep(http_sender.backoff_delay_s(attempt - 1))
            try:
                async with session.request(method, url, data=content, headers=headers) as response:
                    reply = _Reply(response.status, await response.read(), dict(response.headers))
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if reply.status_code < 500 or attempt == self._max_attempts - 1:
                return reply
            failure = f"HTTP {reply.status_code}: {reply.text[:200]}"
        raise self._unreachable(failure)

    def _request_sync(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        client = self._client_sync()
        content = None if body is None else json.dumps(body, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        failure = ""
        for attempt in range(self._max_attempts):
            if attempt:
                time.sleep(http_sender.backoff_delay_s(attempt - 1))
            try:
                response = client.request(method, path, content=content, headers=headers)
            except httpx.RequestError as exc:
                failure = http_sender._network_failure(exc)
                continue
            if response.status_code < 500 or attempt == self._max_attempts - 1:
                return response
            failure = http_sender._status_failure(response)
        raise self._unreachable(failure)

    def _unreachable(self, failure: str) -> errors.EventSendError:
        return errors.EventSendError(
            f"could not reach the Stepline server at {self._settings.base_url} ({failure}); "
            f"is it running, and is {settings_.BASE_URL} right?"
        )


def _stream_request(task_id: str, after_version: int | None) -> dict[str, Any]:
    """``client.stream``'s arguments for a task's stream, resumed after ``after_version``."""
    headers = {} if after_version is None else {"Last-Event-ID": str(after_version)}
    return {"url": _task_path(task_id) + "/stream", "headers": headers, "timeout": _STREAM_TIMEOUT}


def _is_stream_item(event: str, data: Any) -> bool:
    """Whether a frame is passed on: a change of the task, or a keep-alive (data None: the task
    is quiet). Frames of other events are for newer clients."""
    return event == sse.COMMENT or (event == "task" and isinstance(data, dict))


def _task_path(task_id: str) -> str:
    return "/v1/tasks/" + urllib.parse.quote(task_id, safe="")


def _list_path(owner: str | None, status: str | None, cursor: str | None, limit: int, kind: str | None) -> str:
    filters = (("owner", owner), ("status", status), ("kind", kind), ("cursor", cursor))
    query = {key: value for key, value in filters if value}
    query["limit"] = str(limit)
    return "/v1/tasks?" + urllib.parse.urlencode(query)


def _progress(progress: float, message: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"progress": progress}
    if message is not None:
        body["message"] = message
    return body


def _task_or_raise(response: httpx.Response | _Reply, doing: str) -> dict[str, Any]:
    """The JSON body of a successful answer; otherwise the error the SDK raises for it."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code < 400 and isinstance(body, dict):
        return body
    message = body.get("error") if isinstance(body, dict) else None
    text = str(message or response.text[:200] or "no reason given")
    if response.status_code == 429 and isinstance(body, dict):
        raise errors.QuotaExceeded(
            text,
            feature=str(body.get("feature", "")),
            limit=int(body.get("limit") or 0),
            retry_after=float(response.headers.get("retry-after") or body.get("retry_after") or 1),
        )
    if response.status_code == 404:
        raise errors.TaskNotFoundError(text)
    if response.status_code == 409:
        raise errors.TaskConflictError(text)
    if response.status_code in (400, 422):
        raise errors.ConfigurationError(f"the server refused to {doing}: {text}")
    raise errors.EventSendError(
        f"could not {doing} (HTTP {response.status_code}): {text}",
        status=response.status_code,
        server_error=text if message else None,
    )
