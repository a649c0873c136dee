"""Who may call what: event keys for ingest and the task routes, the signing key (as a bearer token)
for the API, the dashboard token for people."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from stepline.protocol import signing
from stepline.server import runtime as runtime_
from stepline.server.errors import ApiError


def runtime_of(request: Request) -> runtime_.ServerRuntime:
    runtime: runtime_.ServerRuntime = request.app.state.runtime
    return runtime


async def require_api_key(request: Request) -> runtime_.ServerRuntime:
    """A dependency: in production, ``Authorization: Bearer <signing key or its hash>`` is required."""
    runtime = runtime_of(request)
    settings = runtime.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if dashboard_token_matches(settings.dashboard_token, bearer):
        return runtime
    if settings.dev and not settings.signing_key:
        if settings.is_local_only or not request.url.path.startswith("/v1"):
            return runtime
        raise ApiError(
            401,
            f"this dev server listens on {settings.host}, beyond this machine: send "
            "'Authorization: Bearer <dashboard token>' (start it with --dashboard-token)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not bearer or not signing.bearer_matches(bearer, settings.signing_keys):
        raise ApiError(
            401,
            "missing or wrong bearer token: send 'Authorization: Bearer <signing key>' (or its sha256 hash)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return runtime


def dashboard_token_matches(expected: str | None, given: str) -> bool:
    """Whether ``given`` is the dashboard token (compared in constant time)."""
    return bool(expected) and bool(given) and hmac.compare_digest(_bytes(given), _bytes(str(expected)))


def event_key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """Whether ``given`` is one of ``keys``, in time that does not depend on how much of a key
    it matches (``in`` would stop at the first differing character, telling an attacker how far
    a guess got)."""
    presented = _bytes(given)
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, _bytes(key))
    return found


def _bytes(secret: str) -> bytes:
    """For ``hmac.compare_digest``: any string, lone surrogates included (a key read from an
    environment variable holding bytes that are not UTF-8 has them)."""
    return secret.encode("utf-8", "surrogatepass")


def check_event_key(runtime: runtime_.ServerRuntime, key: str) -> None:
    settings = runtime.settings
    if settings.dev and not settings.event_keys:
        return
    if not event_key_matches(key, settings.event_keys):
        raise ApiError(401, "Event key not found")


async def require_client_key(request: Request) -> runtime_.ServerRuntime:
    """A dependency: the credential ``check_client_key`` asks for."""
    runtime = runtime_of(request)
    check_client_key(runtime, request.headers.get("authorization", ""))
    return runtime


def check_client_key(runtime: runtime_.ServerRuntime, authorization: str) -> None:
    """An event key (or the signing key, or the dashboard token) as bearer token in
    ``authorization``, unless the server is a dev server without keys listening on this machine
    only; ``ApiError`` 401 otherwise."""
    settings = runtime.settings
    scheme, _, token = authorization.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if dashboard_token_matches(settings.dashboard_token, bearer):
        return
    if settings.dev and not settings.event_keys and not settings.signing_key:
        if settings.is_local_only:
            return
        raise ApiError(
            401,
            f"this dev server listens on {settings.host}, beyond this machine, and has no keys: send "
            "'Authorization: Bearer <dashboard token>' (start it with --dashboard-token), or give it an event key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not bearer or (
        not event_key_matches(bearer, settings.event_keys) and not signing.bearer_matches(bearer, settings.signing_keys)
    ):
        raise ApiError(
            401,
            "missing or wrong bearer token: send 'Authorization: Bearer <event key>' (or the signing key)",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiServer = Annotated[runtime_.ServerRuntime, Depends(require_api_key)]
"""A route parameter: the server runtime, after checking the caller's bearer token."""
ClientServer = Annotated[runtime_.ServerRuntime, Depends(require_client_key)]
"""A route parameter for routes apps call (``/v1/tasks``): the runtime, after checking the event key."""
