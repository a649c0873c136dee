"""The serve endpoint, framework-neutral: GET introspects, PUT syncs, POST executes.

The framework adapters (``stepline.sdk.fastapi``, ``.flask``, ``.django``) only translate
their request into a ``Request`` and a ``Response`` back; every decision is here, and every
answer is JSON with the protocol's headers. Requests are authenticated by their
``X-Inngest-Signature`` (production); dev mode checks no signatures.

A function call goes through ``stepline.sdk.execution`` exactly as the embedded engine's
in-process transport does, without a checkpointer: over HTTP each call runs one new step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence

import pydantic

from stepline import errors
from stepline.protocol import models, responses, signing
from stepline.sdk import client as client_
from stepline.sdk import execution, registration
from stepline.sdk import function as function_
from stepline.sdk import settings as settings_

logger = logging.getLogger("stepline.serve")

METHODS = ("GET", "PUT", "POST")
_Reply = registration.Reply


# Both shapes: the Inngest SDKs' ``message`` and Stepline's ``{"error", "status"}``.
_UNAUTHORIZED = {
    "message": "Unauthorized",
    "error": "request signature missing, invalid or expired: the server and this app need the same signing key",
    "status": 401,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """An incoming request as the handler needs it. Header names are lower-cased."""

    method: str
    url: str
    """The full URL the request came in on (scheme, host, path; query ignored here)."""
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str]

    @classmethod
    def create(
        cls,
        method: str,
        url: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
        query: Mapping[str, str] | None = None,
    ) -> Request:
        """``query`` defaults to the URL's query string (first value of each name)."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        if query is None:
            query = dict(reversed(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)))
        return cls(method.upper(), url, {name.lower(): value for name, value in pairs}, body, dict(query))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    function: function_.Function
    request: models.ExecutionRequest


def missing_key_message(app_id: str) -> str:
    return (
        f"app {app_id!r} cannot serve functions: {settings_.SIGNING_KEY} is not set and {settings_.DEV} is not "
        f"enabled: set one of them. In production set {settings_.SIGNING_KEY} to the server's signing key "
        f"(the server signs every request with it); for local development set {settings_.DEV}=1."
    )


class ServeHandler:
    """Answers the serve endpoint for ``functions`` of ``client``; ``framework`` names the adapter."""

    def __init__(
        self,
        client: client_.Stepline,
        functions: Sequence[function_.Function],
        framework: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        served = _validate(client, functions)
        everything = tuple(fn for served_fn in served for fn in served_fn.with_failure_handlers())
        self._client = client
        self._settings = client.settings
        self._clock = clock
        self._framework = framework
        self._functions = {fn.composite_id: fn for fn in everything}
        self._app = registration.App(client.app_id, framework, client.settings, served, everything)
        self._config_error: str | None = None
        if not self._settings.is_dev and self._settings.signing_key is None:
            self._config_error = missing_key_message(client.app_id)
            logger.error("%s Every request to the serve endpoint will be answered 500 until then.", self._config_error)

    async def handle(self, request: Request) -> Response:
        key = self._authenticate(request)
        step = self._route(request, key)
        if isinstance(step, registration.RegisterCall):
            reply = await registration.register(self._app, step)
        elif isinstance(step, _Call):
            reply = await self._execute(step)
        else:
            reply = step
        return self._finish(reply, key)

    def handle_sync(self, request: Request) -> Response:
        """``handle`` for threaded frameworks (Flask, Django): blocks the calling thread."""
        key = self._authenticate(request)
        step = self._route(request, key)
        if isinstance(step, registration.RegisterCall):
            reply = registration.register_sync(self._app, step)
        elif isinstance(step, _Call):
            reply = self._execute_sync(step)
        else:
            reply = step
        return self._finish(reply, key)

    def _authenticate(self, request: Request) -> str | None:
        """The key that validly signed the request (production only), else None."""
        if self._settings.is_dev or self._config_error is not None:
            return None
        header = request.header(signing.SIGNATURE_HEADER)
        return signing.verify(request.body, header, self._settings.signing_keys, int(self._clock()))

    def _route(self, request: Request, key: str | None) -> _Reply | registration.RegisterCall | _Call:
        if self._config_error is not None:
            return registration.error_reply(500, self._config_error)
        if request.method not in METHODS:
            return registration.error_reply(405, f"method {request.method} not allowed: use GET, PUT or POST")
        production = not self._settings.is_dev
        if production and key is None and request.method != "PUT":
            return registration.json_reply(401, _UNAUTHORIZED)
        if request.method == "GET":
            return self._introspect(request, key)
        if request.method == "PUT":
            return self._sync(request, key)
        return self._prepare_call(request)

    def _server_kind(self, request: Request) -> str | None:
        kind = request.header("X-Inngest-Server-Kind")
        return kind if kind in ("dev", "cloud") else None

    def _introspect(self, request: Request, key: str | None) -> _Reply:
        kind = self._server_kind(request)
        if kind is not None and kind != self._settings.mode:
            return registration.json_reply(403, {})
        return registration.json_reply(200, registration.inspection(self._app, authenticated=key is not None))

    def _sync(self, request: Request, key: str | None) -> _Reply | registration.RegisterCall:
        kind = self._server_kind(request)
        mode = self._settings.mode
        if kind is not None and kind != mode:
            message = f"sync rejected: it came from a {kind} server but this app runs in {mode} mode"
            if mode == "cloud":
                message += f" (set {settings_.DEV}=1 to sync with a dev server)"
            logger.error("%s", message)
            return registration.json_reply(400, {"code": "server_kind_mismatch", "message": message})
        if request.header(registration.SYNC_KIND_HEADER) == "in_band" and mode == "cloud":
            if key is None:
                return registration.json_reply(401, _UNAUTHORIZED)
            return registration.in_band(self._app, request.body)
        return registration.out_of_band(self._app, request.url, dict(request.query), kind)

    def _prepare_call(self, request: Request) -> _Reply | _Call:
        probe = request.query.get("probe")
        if probe:
            if probe == "trust":
                return registration.json_reply(200, None)
            return registration.error_reply(400, f"unsupported probe {probe!r}: the only probe is 'trust'")
        try:
            call = models.ExecutionRequest.model_validate_json(request.body)
        except pydantic.ValidationError as exc:
            return registration.error_reply(400, f"invalid execution request body: {_describe(exc)}")
        fn_id = request.query.get("fnId")
        if not fn_id:
            return registration.error_reply(400, "the fnId query parameter is missing: it names the function to run")
        fn = self._functions.get(fn_id) or self._functions.get(f"{self._client.app_id}-{fn_id}")
        if fn is None:
            message = f"function {fn_id!r} not found in app {self._client.app_id!r}; serving {sorted(self._functions)}"
            return registration.json_reply(
                404,
                {
                    "code": "function_not_found",
                    "message": message,
                    "name": "FunctionNotFoundError",
                    "error": message,
                    "status": 404,
                },
            )
        step_id = request.query.get("stepId") or request.header("X-Inngest-Step-ID")
        if step_id:
            call = call.model_copy(update={"ctx": call.ctx.model_copy(update={"step_id": step_id})})
        if call.use_api or call.ctx.use_api:
            message = "the request asks the SDK to fetch its events and steps from the API (use_api), unsupported"
            return registration.json_reply(500, {"code": "use_api_unsupported", "message": message, "name": "Error"})
        return _Call(fn, call)

    async def _execute(self, call: _Call) -> _Reply:
        try:
            if call.function.is_async:
                result = await execution.execute(call.function, self._client, call.request, checkpointer=None)
            else:
                result = await asyncio.to_thread(
                    execution.execute_sync, call.function, self._client, call.request, checkpointer=None
                )
        except Exception as exc:
            return _crashed(call, exc)
        return _from_call(result)

    def _execute_sync(self, call: _Call) -> _Reply:
        try:
            if call.function.is_async:
                result = asyncio.run(execution.execute(call.function, self._client, call.request, checkpointer=None))
            else:
                result = execution.execute_sync(call.function, self._client, call.request, checkpointer=None)
        except Exception as exc:
            return _crashed(call, exc)
        return _from_call(result)

    def _finish(self, reply: _Reply, key: str | None) -> Response:
        headers = {
            "Content-Type": "application/json",
            "X-Inngest-SDK": settings_.SDK,
            "X-Inngest-Req-Version": "2",
            "X-Inngest-Framework": self._framework,
            "X-Inngest-Expected-Server-Kind": self._settings.mode,
            "X-Inngest-SDK-Handled": "true",
            **reply.headers,
        }
        if key is not None:
            headers[signing.SIGNATURE_HEADER] = signing.sign(reply.body, key, int(self._clock()))
        return Response(reply.status, headers, reply.body)


def _validate(client: client_.Stepline, functions: Sequence[function_.Function]) -> tuple[function_.Function, ...]:
    served = tuple(functions)
    if not served:
        raise errors.ConfigurationError(f"serve() of app {client.app_id!r} needs at least one function")
    seen: set[str] = set()
    for fn in served:
        if not isinstance(fn, function_.Function):
            raise errors.ConfigurationError(f"serve() takes functions made by @client.function(...), got {fn!r}")
        if fn.app_id != client.app_id:
            raise errors.ConfigurationError(
                f"function {fn.id!r} belongs to app {fn.app_id!r}, not {client.app_id!r}: serve it with its own client"
            )
        for each in fn.with_failure_handlers():
            if each.composite_id in seen:
                raise errors.ConfigurationError(f"function id {each.composite_id!r} is served twice")
            seen.add(each.composite_id)
    return served


def _describe(exc: pydantic.ValidationError) -> str:
    problems = [f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


def _from_call(result: responses.CallResponse) -> _Reply:
    try:
        body = json.dumps(result.body, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        message = f"the function's response cannot be encoded as JSON: {exc}"
        return registration.json_reply(500, {"code": "output_unserializable", "message": message, "name": "Error"})
    headers = {"X-Inngest-No-Retry": "true" if result.no_retry else "false"}
    if result.retry_after:
        headers["Retry-After"] = result.retry_after
    if result.request_version is not None:
        headers["X-Inngest-Req-Version"] = str(result.request_version)
    return _Reply(result.status, body, headers)


def _crashed(call: _Call, exc: Exception) -> _Reply:
    logger.exception("calling function %r failed inside the SDK", call.function.composite_id)
    message = f"the SDK failed to run function {call.function.composite_id!r}: {type(exc).__name__}: {exc}"
    return registration.json_reply(500, {"code": "unknown", "message": message, "name": type(exc).__name__})
