"""Server settings: every one readable from a CLI flag and from a ``STEPLINE_*`` variable."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.util
import ipaddress
import os

from stepline import errors
from stepline.engine import retention as retention_
from stepline.protocol import signing

DEFAULT_PORT = 8288
DEFAULT_DEV_DATABASE_URL = "sqlite:///.stepline/dev.db"
MIN_DASHBOARD_TOKEN = 16
MIN_EVENT_KEY = 16
"""Shortest event key a production server takes: anyone holding one may start work (and tracked
tasks, within quotas), so it must not be guessable. ``stepline keys generate`` makes 64 hex digits."""
PLACEHOLDER_EVENT_KEY = "NO_EVENT_KEY_SET"
"""What the SDKs (ours and Inngest's) send when no event key is configured: never a real key."""
DEFAULT_RETENTION = retention_.DEFAULT


@functools.lru_cache(maxsize=16)
def _is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (asked on every request to ``/v1``: parsed once)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def env_list(name: str) -> list[str]:
    """A comma-separated variable as a list (empty items dropped)."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSettings:
    dev: bool
    """Dev mode: no keys needed, requests to apps unsigned unless a key is given."""
    database_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    signing_key: str | None = None
    signing_key_fallback: str | None = None
    event_keys: tuple[str, ...] = ()
    pool_size: int = 10
    concurrency: int = 64
    app_urls: tuple[str, ...] = ()
    """Apps to sync at start (and, in dev mode, to re-sync every ``sync_interval_s``)."""
    sync_interval_s: float = 5.0
    call_timeout_s: float = 300.0
    """Longest a single call to an app may take."""
    dashboard_token: str | None = None
    """Required to open the dashboard (a login form, or ``Authorization: Bearer``); also accepted by ``/v1``."""
    otel: bool = False
    """Emit OpenTelemetry spans per run and step through the global tracer provider (the ``otel`` extra)."""
    retention: datetime.timedelta | None = DEFAULT_RETENTION
    """How long finished runs, tasks and events are kept (``engine.retention``); None keeps them forever.
    ``parse_retention`` reads the flag's text; the engine checks the value (at least a minute)."""
    executes: bool = True
    """False: serve the API and dashboard only. The executor, cron, task sweeper and retention
    run on the other servers sharing the database (started without ``--no-execute``)."""

    def __post_init__(self) -> None:
        if not self.database_url:
            raise errors.ConfigurationError(
                "a database is required: pass --database-url or set STEPLINE_DATABASE_URL "
                "(postgresql://user@host/db, or sqlite:///path.db for a single server)"
            )
        if self.signing_key is not None:
            signing.validate_signing_key(self.signing_key)
        if self.signing_key_fallback is not None:
            signing.validate_signing_key(self.signing_key_fallback)
        if not self.dev:
            self._check_production_keys()
        if not 1 <= self.port <= 65535:
            raise errors.ConfigurationError(f"port must be from 1 to 65535 (got {self.port})")
        if self.concurrency < 1:
            raise errors.ConfigurationError(f"concurrency must be at least 1 (got {self.concurrency})")
        if self.pool_size < 1:
            raise errors.ConfigurationError(f"pool size must be at least 1 (got {self.pool_size})")
        if self.otel and importlib.util.find_spec("opentelemetry") is None:
            raise errors.ConfigurationError(
                "--otel needs OpenTelemetry: install Stepline with its otel extra (pip install 'stepline[otel]')"
            )
        if self.dashboard_token is not None and len(self.dashboard_token) < MIN_DASHBOARD_TOKEN:
            raise errors.ConfigurationError(
                f"the dashboard token must be at least {MIN_DASHBOARD_TOKEN} characters "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )

    def _check_production_keys(self) -> None:
        if not self.signing_key:
            raise errors.ConfigurationError(
                "production mode needs a signing key: pass --signing-key or set STEPLINE_SIGNING_KEY "
                "(create one with 'stepline keys generate')"
            )
        if not self.event_keys:
            raise errors.ConfigurationError(
                "production mode needs at least one event key: pass --event-key or set STEPLINE_EVENT_KEY"
            )
        for key in self.event_keys:
            _check_event_key(key)

    @property
    def signing_keys(self) -> list[str]:
        return [key for key in (self.signing_key, self.signing_key_fallback) if key]

    @property
    def server_kind(self) -> str:
        """The protocol's name for the mode: ``dev`` or ``cloud``."""
        return "dev" if self.dev else "cloud"

    @property
    def is_local_only(self) -> bool:
        return _is_loopback(self.host)

    @property
    def dashboard_refused(self) -> bool:
        """Bound to a non-loopback address without a dashboard token: the dashboard is not served,
        and ``/v1`` answers only callers presenting a credential."""
        return not self.is_local_only and not self.dashboard_token


def _check_event_key(key: str) -> None:
    """A production event key: long enough not to be guessed, and not the SDKs' placeholder."""
    make_one = "(make one with 'stepline keys generate')"
    if key == PLACEHOLDER_EVENT_KEY:
        raise errors.ConfigurationError(
            f"{PLACEHOLDER_EVENT_KEY} is what SDKs send when they have no event key, not a key {make_one}"
        )
    if len(key) < MIN_EVENT_KEY:
        raise errors.ConfigurationError(
            f"event keys must be at least {MIN_EVENT_KEY} characters in production (one is {len(key)}) {make_one}"
        )


def parse_retention(text: str) -> datetime.timedelta | None:
    """``--retention``/``STEPLINE_RETENTION``: a time string (``7d``, ``12h``, ``30m``), or ``0``/``off``."""
    return retention_.parse(text, "--retention")
