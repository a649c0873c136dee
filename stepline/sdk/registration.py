"""What the serve endpoint answers to GET (introspection) and PUT (sync), as the protocol defines.

Pure builders plus the one outgoing call, ``POST {base_url}/fn/register`` (out-of-band sync),
async and sync. ``stepline.sdk.handler`` decides which applies; this module builds bodies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.parse
from typing import Any

import httpx

from stepline.protocol import signing
from stepline.sdk import function as function_
from stepline.sdk import settings as settings_

logger = logging.getLogger("stepline.serve")

SCHEMA_VERSION = "2024-05-24"
CAPABILITIES = {"in_band_sync": "v1", "trust_probe": "v1"}
REGISTER_TIMEOUT_S = 30.0
SYNC_KIND_HEADER = "X-Inngest-Sync-Kind"


@dataclasses.dataclass(slots=True)
class Reply:
    """A response before the handler adds the protocol headers and the signature."""

    status: int
    body: bytes
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def json_reply(status: int, value: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(value).encode(), dict(headers or {}))


def error_reply(status: int, message: str) -> Reply:
    """The handler's own errors (not a function's): ``{"error": ..., "status": N}``."""
    return json_reply(status, {"error": message, "status": status})


@dataclasses.dataclass(frozen=True, slots=True)
class App:
    """What the endpoint serves: the facts introspection and sync report."""

    app_id: str
    framework: str
    settings: settings_.Settings
    served: tuple[function_.Function, ...]
    """The functions given to ``serve`` (without derived on_failure functions)."""
    functions: tuple[function_.Function, ...]
    """Every function the endpoint runs, on_failure functions included, in sync order."""

    def configs(self, serve_url: str) -> list[dict[str, Any]]:
        return [fn.to_config(serve_url) for fn in self.functions]


def serve_url(request_url: str, serve_origin: str | None) -> str:
    """The URL the app advertises: the request's own scheme, host and path, or ``serve_origin`` + path."""
    parsed = urllib.parse.urlsplit(request_url)
    origin = serve_origin or f"{parsed.scheme}://{parsed.netloc}"
    return f"{origin}{parsed.path}"


def inspection(app: App, *, authenticated: bool) -> dict[str, Any]:
    """The GET body: only what is safe to show to anyone, unless the request was signed."""
    settings = app.settings
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "function_count": len(app.served),
        "has_event_key": settings.event_key is not None,
        "has_signing_key": settings.signing_key is not None,
        "has_signing_key_fallback": settings.signing_key_fallback is not None,
        "mode": settings.mode,
    }
    if not authenticated:
        return body
    return body | {
        "api_origin": settings.base_url,
        "app_id": app.app_id,
        "authentication_succeeded": True,
        "capabilities": dict(CAPABILITIES),
        "env": None,
        "event_api_origin": settings.base_url,
        "event_key_hash": signing.hash_event_key(settings.event_key) if settings.event_key else None,
        "framework": app.framework,
        "sdk_language": "stepline-py",
        "sdk_version": settings_.VERSION,
        "serve_origin": settings.serve_origin,
        "serve_path": None,
        "signing_key_fallback_hash": _key_hash(settings.signing_key_fallback),
        "signing_key_hash": _key_hash(settings.signing_key),
    }


def _key_hash(key: str | None) -> str | None:
    return signing.hash_signing_key(key) if key else None


def in_band(app: App, body: bytes) -> Reply:
    """The PUT answer of an in-band sync: the app's configuration in the response itself."""
    try:
        requested = json.loads(body)
    except ValueError:
        requested = None
    if not isinstance(requested, dict) or not isinstance(requested.get("url"), str) or not requested["url"]:
        return error_reply(400, 'an in-band sync request needs a JSON body {"url": "<serve url>"}')
    url = serve_url(requested["url"], app.settings.serve_origin)
    inspected = {k: v for k, v in inspection(app, authenticated=True).items() if v is not None}
    answer = {
        "app_id": app.app_id,
        "framework": app.framework,
        "functions": app.configs(url),
        "inspection": inspected,
        "sdk_author": "stepline",
        "sdk_language": "stepline-py",
        "sdk_version": settings_.VERSION,
        "url": url,
    }
    logger.info("in-band sync of app %r: %d functions at %s", app.app_id, len(app.functions), url)
    return json_reply(200, answer, {SYNC_KIND_HEADER: "in_band"})


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterCall:
    """``POST {base_url}/fn/register``, ready to send."""

    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    bearers: tuple[str, ...]
    """Authorization values to try in order (primary key, then the fallback on 401/403)."""


def out_of_band(app: App, request_url: str, query: dict[str, str], server_kind: str | None) -> RegisterCall:
    """The registration request an out-of-band sync sends to the server."""
    settings = app.settings
    url = serve_url(request_url, settings.serve_origin)
    body = {
        "appname": app.app_id,
        "url": url,
        "functions": app.configs(url),
        "framework": app.framework,
        "sdk": settings_.SDK,
        "v": "0.1",
        "deploy_type": "ping",
        "capabilities": dict(CAPABILITIES),
    }
    headers = {
        "Content-Type": "application/json",
        "User-Agent": settings_.SDK,
        "X-Inngest-SDK": settings_.SDK,
        "X-Inngest-Req-Version": "2",
        "X-Inngest-Framework": app.framework,
    }
    if server_kind is not None:
        headers["X-Inngest-Expected-Server-Kind"] = server_kind
    params = {"deployId": query["deployId"]} if query.get("deployId") else {}
    bearers = tuple(f"Bearer {signing.hash_signing_key(key)}" for key in settings.signing_keys)
    return RegisterCall(f"{settings.base_url}/fn/register", params, headers, json.dumps(body).encode(), bearers)


def _attempts(call: RegisterCall) -> list[dict[str, str]]:
    if not call.bearers:
        return [call.headers]
    return [call.headers | {"Authorization": bearer} for bearer in call.bearers]


async def register(app: App, call: RegisterCall) -> Reply:
    try:
        async with httpx.AsyncClient(timeout=REGISTER_TIMEOUT_S) as http:
            for headers in _attempts(call):
                response = await http.post(call.url, params=call.params, headers=headers, content=call.body)
                if response.status_code not in (401, 403):
                    break
    except httpx.RequestError as exc:
        return _unreachable(app, exc)
    return _relay(app, response)


def register_sync(app: App, call: RegisterCall) -> Reply:
    try:
        with httpx.Client(timeout=REGISTER_TIMEOUT_S) as http:
            for headers in _attempts(call):
                response = http.post(call.url, params=call.params, headers=headers, content=call.body)
                if response.status_code not in (401, 403):
                    break
    except httpx.RequestError as exc:
        return _unreachable(app, exc)
    return _relay(app, response)


def _unreachable(app: App, exc: httpx.RequestError) -> Reply:
    message = (
        f"could not sync app {app.app_id!r}: the Stepline server at {app.settings.base_url} could not be reached "
        f"({type(exc).__name__}: {exc}). Is it running? {settings_.BASE_URL} sets its address."
    )
    logger.error("%s", message)
    return error_reply(500, message)


def _relay(app: App, response: httpx.Response) -> Reply:
    """The server's answer to the registration becomes the PUT's answer, status and body."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        message = (
            f"could not sync app {app.app_id!r}: {app.settings.base_url}/fn/register answered HTTP "
            f"{response.status_code} without a JSON object; is {settings_.BASE_URL} the address of a Stepline server?"
        )
        logger.error("%s", message)
        return error_reply(500, message)
    if response.status_code >= 400:
        logger.error(
            "sync of app %r refused by %s (HTTP %d): %s",
            app.app_id,
            app.settings.base_url,
            response.status_code,
            answer.get("error") or answer.get("message") or answer,
        )
    else:
        logger.info("synced app %r (%d functions) with %s", app.app_id, len(app.functions), app.settings.base_url)
    return Reply(response.status_code, response.content, {SYNC_KIND_HEADER: "out_of_band"})
