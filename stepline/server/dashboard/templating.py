"""Jinja2 rendering for the dashboard: autoescaped templates, formatting filters, safe headers.

Every value from the database (event payloads, step outputs, error stacks, names) is
untrusted; templates never mark anything ``|safe``, and JSON is shown as escaped text.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from stepline.server.dashboard import security

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("stepline.server.dashboard", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _time(millis: int | None) -> str:
    if millis is None:
        return "—"
    moment = datetime.datetime.fromtimestamp(millis / 1000, datetime.UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{millis % 1000:03d}"


def _duration(millis: int | None) -> str:
    if millis is None:
        return "—"
    if millis < 1000:
        return f"{millis} ms"
    if millis < 60_000:
        return f"{millis / 1000:.2f} s"
    if millis < 3_600_000:
        return f"{millis // 60_000} min {millis % 60_000 // 1000} s"
    return f"{millis // 3_600_000} h {millis % 3_600_000 // 60_000} min"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


_ENV.filters["time"] = _time
_ENV.filters["duration"] = _duration
_ENV.filters["pretty"] = _pretty


def render_fragment(name: str, **context: Any) -> str:
    """A template rendered to a string (live updates send these)."""
    return _ENV.get_template(name).render(**context)


def render(request: Request, template: str, /, status: int = 200, **context: Any) -> HTMLResponse:
    """A full page, with the security headers and the CSRF cookie its forms need."""
    context.setdefault("csrf", security.csrf_token(request))
    context.setdefault("nav", "")
    context.setdefault("notice", "")
    context.setdefault("signed_in", bool(request.cookies.get(security.SESSION_COOKIE)))
    html = _ENV.get_template(template).render(request_path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status, headers=security.SECURITY_HEADERS)
    security.remember_csrf(request, response)
    return response
