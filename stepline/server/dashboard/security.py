"""Who may see the dashboard, and how its actions are protected against cross-site requests.

The rules (docs/dashboard.md explains them to users):

- Bound to a loopback address without a token, the dashboard is open: only this machine (or an
  SSH tunnel) can reach it.
- Bound elsewhere without a token, the dashboard answers 403 with a page saying how to fix it,
  and ``/v1`` requests without any credential are refused (``V1Guard``). Requests that carry
  one (the signing key, or an event key on routes that take it) go on to the route's own check.
- With a token, a login form sets an HttpOnly, SameSite=Strict session cookie, and
  ``Authorization: Bearer <token>`` works too. The cookie holds an HMAC of the token, not the
  token: every server sharing the token accepts it, and changing the token signs everyone out.

Actions are POSTs that must carry the CSRF token (a random value in a SameSite=Strict cookie,
repeated in a hidden form field: another site can neither read nor set it) and come from a page
of this host (the ``Origin``, else ``Referer``, header names this host).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import urllib.parse

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from stepline.server import auth
from stepline.server import settings as settings_

SESSION_COOKIE = "stepline_session"
CSRF_COOKIE = "stepline_csrf"
CSRF_FIELD = "csrf"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No inline script or style anywhere: an injected ``<script>`` would not run even if escaping failed."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class AccessDenied(Exception):
    """The dashboard may not be shown to this request: ``reason`` is ``refused`` or ``login``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRejected(Exception):
    """A POST that did not come from one of this dashboard's own forms."""


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"stepline-dashboard-session", hashlib.sha256).hexdigest()


def signed_in(request: Request, settings: settings_.ServerSettings) -> bool:
    token = settings.dashboard_token
    if not token:
        return False
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and hmac.compare_digest(cookie.encode(), session_value(token).encode()):
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and auth.dashboard_token_matches(token, given.strip())


def check_viewer(request: Request, settings: settings_.ServerSettings) -> None:
    """Raise ``AccessDenied`` unless this request may see the dashboard."""
    if settings.dashboard_token:
        if not signed_in(request, settings):
            raise AccessDenied("login")
    elif not settings.is_local_only:
        raise AccessDenied("refused")


def csrf_token(request: Request) -> str:
    """The request's CSRF token (its cookie), or a new one that ``remember_csrf`` will set."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if len(existing) == 43:  # token_urlsafe(32)
        return existing
    token: str = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(32)
    request.state.new_csrf = token
    return token


def remember_csrf(request: Request, response: Response) -> None:
    new = getattr(request.state, "new_csrf", "")
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", secure=_is_https(request), path="/")


def check_csrf(request: Request, form: dict[str, str]) -> None:
    """Raise ``CsrfRejected`` unless the POST came from one of this host's pages with its token."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    source = origin if origin and origin != "null" else request.headers.get("referer")
    if not source or urllib.parse.urlsplit(source).netloc != host:
        raise CsrfRejected("the request did not come from this dashboard (its Origin or Referer names another host)")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get(CSRF_FIELD, "")
    if not cookie or not given or not hmac.compare_digest(cookie.encode(), given.encode()):
        raise CsrfRejected("the form's CSRF token is missing or stale: reload the page and try again")


def login_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
        path="/",
        max_age=7 * 86_400,
    )


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https"


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIXES = ("/v1/", "/e/", "/fn/")


class V1Guard:
    """ASGI middleware: on a loopback bind, a request whose ``Host`` names another machine gets
    403 (DNS rebinding). A state-changing API request whose ``Origin`` names another site gets 403.
    And when the dashboard is refused (a non-loopback bind without a token),
    ``/v1`` and ``/metrics`` requests without an ``Authorization`` header get 401 at once.
    Requests with one go on to the route, which checks the credential itself."""

    def __init__(self, app: ASGIApp, settings: settings_.ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.is_local_only:
            host = dict(scope.get("headers") or []).get(b"host")
            if host is not None and not _names_this_machine(host):
                await _answer(
                    send,
                    403,
                    f"this server listens on {self.settings.host} and answers only requests addressed to this "
                    f"machine (Host: localhost or a loopback address), not Host: {host.decode('latin-1')!r}",
                    {},
                )
                return
        if (
            scope["type"] == "http"
            and scope["method"] not in SAFE_METHODS
            and scope.get("path", "").startswith(API_PREFIXES)  # the dashboard's forms check their own
        ):
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin")
            if origin is not None and not _same_origin(origin, headers.get(b"host", b"")):
                await _answer(send, 403, "cross-site request refused: its Origin names another site", {})
                return
        if scope["type"] == "http" and self.settings.dashboard_refused:
            path: str = scope.get("path", "")
            if path.startswith(("/v1/", "/metrics")) or path == "/v1":
                headers = dict(scope.get("headers") or [])
                if not headers.get(b"authorization", b"").strip():
                    await _refuse(send, self.settings.host)
                    return
        await self.app(scope, receive, send)


def _names_this_machine(host: bytes) -> bool:
    """Whether a ``Host`` header names a loopback address or ``localhost``. A server bound to
    loopback can still be reached by a page on another site through DNS rebinding (its name made
    to resolve to 127.0.0.1): the browser then sends that site's name as ``Host``, and both the
    origin checks and the same-origin policy would count the page as this server's own."""
    name = urllib.parse.urlsplit(f"//{host.decode('latin-1')}").hostname or ""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _same_origin(origin: bytes, host: bytes) -> bool:
    """Whether a browser's ``Origin`` header names the host it sent the request to. Browsers
    add ``Origin`` to every cross-site POST, and a page elsewhere could otherwise make a
    visitor's browser send events, syncs or cancels to a key-less server on their machine
    (a form posting ``text/plain`` needs no CORS pre-flight). Servers and SDKs send no
    ``Origin``, so they are not affected."""
    text = origin.decode("latin-1")
    return text != "null" and urllib.parse.urlsplit(text).netloc.encode("latin-1") == host


async def _refuse(send: Send, host: str) -> None:
    message = (
        f"this server listens on {host}, beyond this machine, and has no dashboard token: "
        "send 'Authorization: Bearer <signing key or event key>', or restart it with --dashboard-token"
    )
    await _answer(send, 401, message, {b"www-authenticate": b"Bearer"})


async def _answer(send: Send, status: int, message: str, headers: dict[bytes, bytes]) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers.items(),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
