"""The SDK's settings: where the server is, the keys, and the mode, read once per client.

Environment variables (explicit ``stepline.Stepline(...)`` arguments win over them):

``STEPLINE_BASE_URL``
    Origin of the Stepline server, used for ``/fn/register`` (sync) and ``/e/{event key}``
    (sending events). Default ``http://127.0.0.1:8288``.
``STEPLINE_SIGNING_KEY`` / ``STEPLINE_SIGNING_KEY_FALLBACK``
    The key the server signs its requests with (hex, optionally ``signkey-<env>-`` prefixed),
    and a second key accepted during rotation. Required in production.
``STEPLINE_EVENT_KEY``
    The key in the ``/e/{key}`` path when sending events. Required in production.
``STEPLINE_DEV``
    ``1``/``true`` selects dev mode (no signatures, no keys needed); ``0``/``false`` or unset
    selects production (``cloud`` on the wire).
``STEPLINE_SERVE_ORIGIN``
    The origin (``https://app.example.com``) the app advertises when it syncs, when the
    server must reach it at another address than the one the sync request came in on.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import urllib.parse
from collections.abc import Mapping

from stepline import errors
from stepline.protocol import responses, signing

DEFAULT_BASE_URL = "http://127.0.0.1:8288"
DEV_EVENT_KEY = "NO_EVENT_KEY_SET"

BASE_URL = "STEPLINE_BASE_URL"
SIGNING_KEY = "STEPLINE_SIGNING_KEY"
SIGNING_KEY_FALLBACK = "STEPLINE_SIGNING_KEY_FALLBACK"
EVENT_KEY = "STEPLINE_EVENT_KEY"
DEV = "STEPLINE_DEV"
SERVE_ORIGIN = "STEPLINE_SERVE_ORIGIN"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _version() -> str:
    try:
        return importlib.metadata.version("stepline")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


VERSION = _version()
SDK = f"{responses.SDK_NAME}:v{VERSION}"
"""``X-Inngest-SDK`` value: ``stepline-py:v<version>``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    base_url: str
    """Server origin without trailing slash."""
    signing_key: str | None
    signing_key_fallback: str | None
    event_key: str | None
    is_dev: bool
    serve_origin: str | None
    """``scheme://host[:port]`` the app advertises at sync, or None to use the request's own."""

    @property
    def mode(self) -> str:
        """The server kind on the wire: ``dev`` or ``cloud``."""
        return "dev" if self.is_dev else "cloud"

    @property
    def signing_keys(self) -> list[str]:
        """Keys that may have signed a request, primary first."""
        return [key for key in (self.signing_key, self.signing_key_fallback) if key]


def load(
    *,
    base_url: str | None = None,
    event_key: str | None = None,
    signing_key: str | None = None,
    signing_key_fallback: str | None = None,
    is_dev: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from arguments, then ``STEPLINE_*`` variables; ``ConfigurationError`` names a bad one."""
    env = os.environ if environ is None else environ
    dev = is_dev if is_dev is not None else _parse_dev(env.get(DEV))
    return Settings(
        base_url=_origin(_pick(base_url, env, BASE_URL) or DEFAULT_BASE_URL, BASE_URL, dev, keep_path=True),
        signing_key=_signing_key(_pick(signing_key, env, SIGNING_KEY), SIGNING_KEY),
        signing_key_fallback=_signing_key(_pick(signing_key_fallback, env, SIGNING_KEY_FALLBACK), SIGNING_KEY_FALLBACK),
        event_key=_pick(event_key, env, EVENT_KEY),
        is_dev=dev,
        serve_origin=_serve_origin(env.get(SERVE_ORIGIN), dev),
    )


def _pick(explicit: str | None, env: Mapping[str, str], name: str) -> str | None:
    value = explicit if explicit is not None else env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _parse_dev(value: str | None) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise errors.ConfigurationError(
        f"{DEV}={value!r} is not understood: use {DEV}=1 for dev mode, or leave it unset (or 0) for production"
    )


def _signing_key(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        signing.validate_signing_key(value)
    except errors.ConfigurationError as exc:
        raise errors.ConfigurationError(f"{name} (or the matching Stepline(...) argument) is invalid: {exc}") from None
    return value


def _origin(value: str, name: str, dev: bool, *, keep_path: bool) -> str:
    text = value.strip()
    if "://" not in text:
        text = f"{'http' if dev else 'https'}://{text}"
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise errors.ConfigurationError(f"{name}={value!r} is not an http(s) URL like http://127.0.0.1:8288")
    path = parsed.path.rstrip("/") if keep_path else ""
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def _serve_origin(value: str | None, dev: bool) -> str | None:
    if value is None or not value.strip():
        return None
    return _origin(value, SERVE_ORIGIN, dev, keep_path=False)
