"""The request path's routes, served without FastAPI's layers.

A few routes are called while somebody waits on them: an application's route enqueueing a task
or sending an event before it answers its own user, a client polling a task, a function
reporting progress between steps. On these, FastAPI's machinery (routing over every route,
dependency solving, validating the body after ``json.loads``, four more middlewares) cost about
as much CPU as the enqueue itself, and on a small machine whose caches go cold between requests
every instruction counts twice. So ``Lane`` sits in front of the FastAPI routes (inside
``V1Guard`` and Starlette's error middleware) and serves these routes directly: one match on the
method and the path's segments, the body read and validated in one pydantic call, errors turned
into answers by ``errors.answer_for`` like everywhere else, and one JSON answer. Everything
else goes on to FastAPI. The lane's routes are still in the OpenAPI document (``openapi``).
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import pydantic
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stepline.server import errors as errors_
from stepline.server import runtime as runtime_

Model = TypeVar("Model", bound=pydantic.BaseModel)

DEFAULT_MAX_BODY = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    runtime: runtime_.ServerRuntime
    params: Mapping[str, str]
    """The path's ``{name}`` segments."""
    query: Mapping[str, str]
    """The query string's parameters (the first value of each)."""
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def parse(self, model: type[Model]) -> Model:
        """The body as ``model``; ``ApiError`` 422 naming each field that is wrong."""
        try:
            return model.model_validate_json(self.body)
        except pydantic.ValidationError as exc:
            problems = errors_.describe_problems(exc.errors(include_url=False), prefix=("body",))
            raise errors_.ApiError(422, f"invalid request: {problems}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    """JSON."""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Reply]]
Check = Callable[[runtime_.ServerRuntime, Mapping[str, str], Mapping[str, str]], None]
"""Who may call a route, from the runtime, the path's parameters and the headers (before the body
is read, so a caller without a credential cannot make the server hold a large body);
``ApiError`` 401 otherwise."""


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    """Segments, some ``{name}``: ``/v1/tasks/{task_id}/progress``."""
    handler: Handler
    summary: str
    responses: Mapping[int, str]
    """The answers, for the OpenAPI document."""
    check: Check
    body: type[pydantic.BaseModel] | None = None
    """The request body's model: the body must be sent as JSON (415 otherwise, so that a web page
    cannot post one cross-site without a preflight), and the OpenAPI document shows it. Handlers
    parse it themselves (``Request.parse``)."""
    documented_body: Mapping[str, Any] | None = None
    """For a route without ``body`` that parses its body itself and takes it with any content
    type (``/e``, as Inngest's SDKs send it): the body's JSON schema, for the OpenAPI document."""
    query: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Query parameters and what each means, for the OpenAPI document."""
    max_body: int = DEFAULT_MAX_BODY
    """Bytes; a longer body is refused with 413 before it is read whole."""
    tag: str = ""
    segments: tuple[str, ...] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The path parameters if ``segments`` is this route's path, else None."""
        params: dict[str, str] = {}
        for pattern, segment in zip(self.segments, segments, strict=True):
            if pattern.startswith("{"):
                if not segment:
                    return None
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


class Lane:
    """ASGI middleware serving ``routes`` and passing every other request on to ``app``.

    The lane owns its routes' paths: a request for one of them with another method is answered
    405, as FastAPI answers for its own routes (no FastAPI route shares a lane route's path).
    """

    def __init__(self, app: ASGIApp, runtime: runtime_.ServerRuntime, routes: Sequence[Route]) -> None:
        self.app = app
        self.runtime = runtime
        self._routes: dict[int, list[Route]] = {}
        for route in routes:
            self._routes.setdefault(len(route.segments), []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if "\x00" in path or b"%00" in scope["query_string"]:
                # No id, name or filter holds a NUL, and PostgreSQL cannot even compare with one:
                # refuse it here, for every route, rather than fail in the database.
                await _answer(send, Reply(400, {"error": "the URL contains a NUL character (%00)", "status": 400}))
                return
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path.startswith("/") and not path.endswith("/"):
                method = "GET" if scope["method"] == "HEAD" else scope["method"]  # uvicorn drops HEAD bodies
                found, allowed = self._find(path, method)
                if found is not None:
                    await self._serve(*found, scope, receive, send)
                    return
                if allowed:
                    await _answer(
                        send, Reply(405, {"error": "Method Not Allowed", "status": 405}, {"Allow": ", ".join(allowed)})
                    )
                    return
            elif (location := _without_slash(scope, root, path)) is not None and self._find(path.rstrip("/"), "")[1]:
                # As FastAPI answers for its own routes (Starlette's redirect_slashes): the same
                # path without its trailing slash, same method and body (307), not a bare 404.
                reply = Reply(307, {"status": 307, "location": location}, {"Location": location})
                await _answer(send, reply, with_body=scope["method"] != "HEAD")
                return
        await self.app(scope, receive, send)

    def _find(self, path: str, method: str) -> tuple[tuple[Route, dict[str, str]] | None, list[str]]:
        """The route serving ``method`` on ``path`` with its parameters, if any, and the methods
        the lane serves on that path."""
        segments = path[1:].split("/")
        allowed: list[str] = []
        for route in self._routes.get(len(segments), ()):
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method:
                return (route, params), allowed
            allowed.append(route.method)
        return None, allowed

    async def _serve(self, route: Route, params: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        query = {
            name: values[0] for name, values in urllib.parse.parse_qs(scope["query_string"].decode("latin-1")).items()
        }
        try:
            route.check(self.runtime, params, headers)
            if route.body is not None:
                _require_json(headers.get("content-type", ""))
            body = await _read_body(receive, headers.get("content-length", ""), route.max_body)
            if body is None:
                return  # the client went away
            reply = await route.handler(Request(self.runtime, params, query, headers, body))
        except Exception as exc:
            answer = errors_.answer_for(exc)
            reply = Reply(answer.status, answer.body, answer.headers)
        await _answer(send, reply, with_body=scope["method"] != "HEAD")


def _without_slash(scope: Scope, root: str, path: str) -> str | None:
    """Where a path ending with slashes points without them (query kept), or None when the path
    does not end with one as sent: ``%2F`` decodes to a slash, but stripping it would change the
    last segment, and the address as sent has none to strip (redirecting would loop)."""
    if not path.startswith("/") or not path.rstrip("/"):
        return None
    raw: bytes | None = scope.get("raw_path")
    sent = raw.decode("latin-1") if raw else urllib.parse.quote(root + path)
    if not sent.endswith("/"):
        return None
    location = sent.rstrip("/")
    if urllib.parse.unquote(location) != root + path.rstrip("/"):
        return None  # an escaped slash among the trailing ones
    if scope["query_string"]:
        location += "?" + scope["query_string"].decode("latin-1")
    return location


def _require_json(content_type: str) -> None:
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise errors_.ApiError(
            415, f"send the body as JSON, with 'Content-Type: application/json' (got {content_type or 'none'!r})"
        )


async def _read_body(receive: Receive, declared: str, limit: int) -> bytes | None:
    too_large = errors_.ApiError(413, f"request body is larger than {_size(limit)}")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"


async def _answer(send: Send, reply: Reply, *, with_body: bool = True) -> None:
    # As Starlette's JSONResponse encodes it: compact, UTF-8, no NaN.
    text = json.dumps(reply.body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        content = text.encode()
    except UnicodeEncodeError:  # an error quoting a lone surrogate it refused: escape it, as JSON can
        content = json.dumps(reply.body, allow_nan=False, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": content if with_body else b""})


def openapi(app: FastAPI, routes: Sequence[Route]) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document of its own routes, with the lane's routes added."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            found = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for route in routes:
                found.setdefault("paths", {}).setdefault(route.path, {})[route.method.lower()] = _operation(
                    route, found.setdefault("components", {}).setdefault("schemas", {})
                )
            app.openapi_schema = found
        return app.openapi_schema

    return document


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.handler.__name__}_{route.method.lower()}",
        "responses": {str(code): {"description": text} for code, text in route.responses.items()},
    }
    if route.handler.__doc__:
        operation["description"] = " ".join(route.handler.__doc__.split())
    if route.tag:
        operation["tags"] = [route.tag]
    parameters = [
        {"name": segment[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for segment in route.segments
        if segment.startswith("{")
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
        for name, text in route.query.items()
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[route.body.__name__] = schema
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
        }
    elif route.documented_body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.documented_body}},
        }
    return operation
