"""``stepline dev`` and ``stepline start``: every setting checked before anything is opened, then
the server, until a signal stops it.

Stopping: the first Ctrl-C (SIGINT) or SIGTERM lets requests and calls to apps in flight finish
(the engine's grace period) and says so; a second one stops at once (runs cut off are retried
when their leases expire, as after a crash). A server stopped by SIGTERM exits 0, by Ctrl-C 130.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn

from stepline import errors
from stepline.cli import api, console, database
from stepline.protocol import signing
from stepline.server import settings as settings_

GRACE_S = 10
"""Seconds open requests get to finish once stopping; the engine then gives calls to apps as long
(``EngineCore.stop``'s default)."""
MIN_SIGNING_KEY_HEX = 32
"""Hex digits (16 bytes) a production signing key needs at least: it signs every call to apps
and opens the whole API. ``stepline keys generate`` makes 64."""


def serve(dev: bool, **options: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call to an app is noise
    settings = _settings(dev, options)
    _check_port_free(settings.host, settings.port)
    database.check_opens(settings.database_url, settings.pool_size, write=True)

    from stepline.server.app import create_app

    if settings.dashboard_refused:
        logging.getLogger("stepline.server").warning(
            "listening on %s without --dashboard-token: the dashboard is refused and /v1 answers only "
            "requests with a credential; set STEPLINE_DASHBOARD_TOKEN, or listen on 127.0.0.1 and use an SSH tunnel",
            settings.host,
        )
    mode = "dev" if dev else "production"
    role = "" if settings.executes else "; API only: runs execute on other servers"
    console.echo(
        f"Stepline {mode} server on {address(settings.host, settings.port)} "
        f"(database {database.redact(settings.database_url)}{role})"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=GRACE_S,  # an open event stream must not hold the server forever
    )
    server = _Server(config)
    server.run()
    if server.stopped_by is not None:
        sys.exit(0 if server.stopped_by == signal.SIGTERM else 128 + server.stopped_by)
    if not server.started:
        console.fail("the server did not start: see the log above")


def address(host: str, port: int) -> str:
    """The base URL of a server on ``host``: an IPv6 address goes in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _settings(dev: bool, options: dict[str, Any]) -> settings_.ServerSettings:
    try:
        settings = settings_.ServerSettings(
            dev=dev,
            database_url=options["database_url"] or "",
            host=options["host"],
            port=options["port"],
            signing_key=options["signing_key"],
            signing_key_fallback=options["signing_key_fallback"],
            event_keys=_split(options["event_keys"]),
            app_urls=_split(options["app_urls"]),
            pool_size=options["pool_size"],
            concurrency=options["concurrency"],
            dashboard_token=options["dashboard_token"] or None,
            otel=options["otel"],
            executes=options["executes"],
            retention=settings_.parse_retention(options["retention"]),
        )
    except errors.ConfigurationError as exc:
        console.fail(database.scrub(str(exc), options["database_url"] or ""), console.BAD_INPUT)
    database.check_url(settings.database_url)
    for url in settings.app_urls:
        # Checked here: the syncer would otherwise log the same failure every 5 s, forever.
        api.check_url(url, "--sdk-url", "http://127.0.0.1:8000/api/stepline", query=True)
    if not dev:
        _check_strong("signing key (--signing-key)", settings.signing_key)
        _check_strong("fallback signing key (--signing-key-fallback)", settings.signing_key_fallback)
    return settings


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def _check_strong(what: str, key: str | None) -> None:
    if key is None:
        return
    digits = len(signing.strip_prefix(key))
    if digits < MIN_SIGNING_KEY_HEX:
        console.fail(
            f"the {what} is too short for a production server: {digits} hex digits, at least "
            f"{MIN_SIGNING_KEY_HEX} ({MIN_SIGNING_KEY_HEX // 2} bytes) needed; make one with 'stepline keys generate'",
            console.BAD_INPUT,
        )


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            console.fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


class _Server(uvicorn.Server):
    """uvicorn's server with Stepline's way of stopping (see the module docstring). uvicorn's own
    re-raises the signal once stopped: Ctrl-C became click's 'Aborted!' with status 1, SIGTERM
    status 143, and its second Ctrl-C did not cut the engine's grace period short."""

    stopped_by: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stopped_by is not None:
            console.note("Stopping at once: runs in flight are retried when their leases expire.")
            _flush()
            os._exit(128 + sig)  # at once means now: the grace period is awaited in the lifespan
        self.stopped_by = sig
        console.note(
            f"Stopping: letting requests and calls to apps in flight finish (up to {GRACE_S} s each); "
            "press Ctrl-C again to stop at once."
        )
        self.should_exit = True


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
