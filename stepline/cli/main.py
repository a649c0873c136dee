"""``stepline``: run the server, migrate, send events, inspect runs, make keys.

Every option can also be set with the ``STEPLINE_*`` variable named in its help. Errors end
with a one-line reason and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import socket
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click
import httpx

from stepline import errors
from stepline.protocol import signing
from stepline.server import settings as settings_
from stepline.storage import open_store, records

DEFAULT_URL = f"http://127.0.0.1:{settings_.DEFAULT_PORT}"
_MAX_PAGE = 500
"""The largest page the server's list routes answer."""


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {' '.join(message.split())}", err=True)  # one line, whatever the driver said
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stepline")
def main() -> None:
    """Stepline: durable functions for Python apps, on SQLite or PostgreSQL."""


F = TypeVar("F", bound=Callable[..., Any])


def _server_options(dev: bool) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        options = [
            click.option(
                "--host",
                envvar="STEPLINE_HOST",
                default="127.0.0.1",
                show_default=True,
                help="Interface to listen on [STEPLINE_HOST].",
            ),
            click.option(
                "--port",
                "-p",
                envvar="STEPLINE_PORT",
                type=int,
                default=settings_.DEFAULT_PORT,
                show_default=True,
                help="Port to listen on [STEPLINE_PORT].",
            ),
            click.option(
                "--database-url",
                envvar="STEPLINE_DATABASE_URL",
                default=settings_.DEFAULT_DEV_DATABASE_URL if dev else None,
                required=not dev,
                show_default=dev,
                help="sqlite:///path.db or postgresql://... [STEPLINE_DATABASE_URL].",
            ),
            click.option(
                "--signing-key",
                envvar="STEPLINE_SIGNING_KEY",
                default=None,
                help="Key that signs requests to apps [STEPLINE_SIGNING_KEY].",
            ),
            click.option(
                "--signing-key-fallback",
                envvar="STEPLINE_SIGNING_KEY_FALLBACK",
                default=None,
                help="Previous key, accepted during rotation [STEPLINE_SIGNING_KEY_FALLBACK].",
            ),
            click.option(
                "--event-key",
                "event_keys",
                envvar="STEPLINE_EVENT_KEY",
                multiple=True,
                help="Key apps send events with; repeatable [STEPLINE_EVENT_KEY, comma-separated].",
            ),
            click.option(
                "--sdk-url",
                "-u",
                "app_urls",
                envvar="STEPLINE_SDK_URL",
                multiple=True,
                help="Serve URL of an app to sync; repeatable [STEPLINE_SDK_URL].",
            ),
            click.option(
                "--pool-size",
                envvar="STEPLINE_POOL_SIZE",
                type=int,
                default=10,
                show_default=True,
                help="PostgreSQL connections per server [STEPLINE_POOL_SIZE].",
            ),
            click.option(
                "--concurrency",
                envvar="STEPLINE_CONCURRENCY",
                type=int,
                default=64,
                show_default=True,
                help="Calls to apps in flight at once [STEPLINE_CONCURRENCY].",
            ),
            click.option(
                "--dashboard-token",
                envvar="STEPLINE_DASHBOARD_TOKEN",
                default=None,
                help="Token that opens the dashboard; required to serve it beyond 127.0.0.1 "
                "[STEPLINE_DASHBOARD_TOKEN].",
            ),
            click.option(
                "--retention",
                envvar="STEPLINE_RETENTION",
                default="7d",
                show_default=True,
                help="How long finished runs, tasks and events are kept, such as 7d, 12h or 30m; 0 or off "
                "keeps them forever [STEPLINE_RETENTION].",
            ),
            click.option(
                "--otel",
                envvar="STEPLINE_OTEL",
                is_flag=True,
                default=False,
                help="Emit OpenTelemetry spans per run and step through the global tracer provider "
                "(needs the otel extra) [STEPLINE_OTEL].",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def _serve(dev: bool, **options: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call to an app is noise
    try:
        server_settings = settings_.ServerSettings(
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
            retention=settings_.parse_retention(options["retention"]),
        )
    except errors.ConfigurationError as exc:
        _fail(str(exc), 2)
    _check_port_free(server_settings.host, server_settings.port)
    _check_database(server_settings.database_url, server_settings.pool_size)

    import uvicorn

    from stepline.server.app import create_app

    if server_settings.dashboard_refused:
        logging.getLogger("stepline.server").warning(
            "listening on %s without --dashboard-token: the dashboard is refused and /v1 answers only "
            "requests with a credential; set STEPLINE_DASHBOARD_TOKEN, or listen on 127.0.0.1 and use an SSH tunnel",
            server_settings.host,
        )
    mode = "dev" if dev else "production"
    click.echo(
        f"Stepline {mode} server on http://{server_settings.host}:{server_settings.port} "
        f"(database {_redact(server_settings.database_url)})"
    )
    uvicorn.run(
        create_app(server_settings),
        host=server_settings.host,
        port=server_settings.port,
        log_level="warning",
        lifespan="on",
    )


@main.command()
@_server_options(dev=True)
def dev(**options: Any) -> None:
    """Run a dev server: SQLite at .stepline/dev.db, no keys needed, apps re-synced every 5 s."""
    _serve(True, **options)


@main.command()
@_server_options(dev=False)
def start(**options: Any) -> None:
    """Run a production server: requires --database-url, --signing-key and --event-key."""
    _serve(False, **options)


@main.command()
@click.option(
    "--database-url", envvar="STEPLINE_DATABASE_URL", required=True, help="Database to migrate [STEPLINE_DATABASE_URL]."
)
def migrate(database_url: str) -> None:
    """Create or update the database schema (safe to run again)."""
    _check_database(database_url, 1)
    click.echo(f"Database {_redact(database_url)} is up to date.")


@main.command()
@click.argument("name")
@click.option("--data", default="{}", help="Event data as a JSON object.")
@click.option("--id", "event_id", default=None, help="Event id (idempotency key).")
@click.option(
    "--url", envvar="STEPLINE_BASE_URL", default=DEFAULT_URL, show_default=True, help="Server URL [STEPLINE_BASE_URL]."
)
@click.option(
    "--event-key", envvar="STEPLINE_EVENT_KEY", default="NO_EVENT_KEY_SET", help="Event key [STEPLINE_EVENT_KEY]."
)
def send(name: str, data: str, event_id: str | None, url: str, event_key: str) -> None:
    """Send event NAME to the server; prints the event ids and the runs it started."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        _fail(f"--data is not valid JSON: {exc}", 2)
    event: dict[str, Any] = {"name": name, "data": payload}
    if event_id:
        event["id"] = event_id
    answer = _request("POST", f"{url.rstrip('/')}/e/{event_key}", None, json_body=event)
    click.echo(json.dumps(answer, indent=2))


@main.group()
def runs() -> None:
    """Inspect and act on runs through the server's API."""


def _api_options(command: Any) -> Any:
    command = click.option(
        "--url",
        envvar="STEPLINE_BASE_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Server URL [STEPLINE_BASE_URL].",
    )(command)
    return click.option(
        "--signing-key",
        envvar="STEPLINE_SIGNING_KEY",
        default=None,
        help="Signing key, for a production server [STEPLINE_SIGNING_KEY].",
    )(command)


@runs.command("show")
@click.argument("run_id")
@_api_options
def runs_show(run_id: str, url: str, signing_key: str | None) -> None:
    """Show a run with its steps."""
    click.echo(json.dumps(_request("GET", f"{url.rstrip('/')}/v1/runs/{run_id}", signing_key)["data"], indent=2))


@runs.command("cancel")
@click.argument("run_id")
@_api_options
def runs_cancel(run_id: str, url: str, signing_key: str | None) -> None:
    """Cancel a run that has not ended."""
    data = _request("POST", f"{url.rstrip('/')}/v1/runs/{run_id}/cancel", signing_key)["data"]
    click.echo(f"cancelled {run_id}" if data["cancelled"] else f"{run_id} had already ended")


@runs.command("rerun")
@click.argument("run_id")
@_api_options
def runs_rerun(run_id: str, url: str, signing_key: str | None) -> None:
    """Start a new run of the same function with the same event."""
    data = _request("POST", f"{url.rstrip('/')}/v1/runs/{run_id}/rerun", signing_key)["data"]
    click.echo(data["run_id"])


@runs.command("retry")
@click.argument("run_id")
@_api_options
def runs_retry(run_id: str, url: str, signing_key: str | None) -> None:
    """Retry a failed run from its failed step, keeping the results of the steps before it."""
    data = _request("POST", f"{url.rstrip('/')}/v1/runs/{run_id}/retry", signing_key)["data"]
    click.echo(data["run_id"])


@runs.command("list")
@click.option(
    "--status", default=None, help="Only runs in this status: queued, running, completed, failed, cancelled, skipped."
)
@click.option("--function", "function_id", default=None, help="Only runs of this function (<app id>-<function id>).")
@click.option("--limit", type=int, default=50, show_default=True, help=f"Runs per page, 1 to {_MAX_PAGE}.")
@click.option("--cursor", default=None, help="Show the page after the one that printed this cursor.")
@_api_options
def runs_list(
    status: str | None, function_id: str | None, limit: int, cursor: str | None, url: str, signing_key: str | None
) -> None:
    """List runs, newest first: id, status, function and creation time (UTC), and why a skipped or
    cancelled run was; then the next page's cursor."""
    known = [value.value for value in records.RunStatus]
    if status is not None and status.lower() not in known:
        _fail(f"--status must be one of {', '.join(known)} (got {status!r})", 2)
    query = _page_query(limit, cursor, status=status and status.lower(), function_id=function_id)
    answer = _request("GET", f"{url.rstrip('/')}/v1/runs?{query}", signing_key)
    lines = [
        (run["id"], run["status"], run["function_id"], _utc(run["created_at"]), *_stop_reason(run))
        for run in answer["data"]
    ]
    _print_page(lines, answer.get("cursor"), "runs")


def _stop_reason(run: dict[str, Any]) -> tuple[str, ...]:
    """Why flow control (or a person) stopped a run, as a last column: a skipped run's or a
    cancelled run's error message, on one line."""
    error = run.get("error")
    if run.get("status") not in ("skipped", "cancelled") or not isinstance(error, dict):
        return ()
    message = " ".join(str(error.get("message") or "").split())
    return (message,) if message else ()


@main.group()
def events() -> None:
    """Inspect stored events through the server's API."""


@events.command("list")
@click.option("--name", default=None, help="Only events with this name.")
@click.option("--limit", type=int, default=50, show_default=True, help=f"Events per page, 1 to {_MAX_PAGE}.")
@click.option("--cursor", default=None, help="Show the page after the one that printed this cursor.")
@_api_options
def events_list(name: str | None, limit: int, cursor: str | None, url: str, signing_key: str | None) -> None:
    """List stored events, newest first: internal id, name, time received (UTC) and, when the sender
    chose one, the public id; then the next page's cursor."""
    query = _page_query(limit, cursor, name=name)
    answer = _request("GET", f"{url.rstrip('/')}/v1/events?{query}", signing_key)
    lines = [
        (event["internal_id"], event["name"], _utc(event["received_at"]))
        + ((f"id={event['id']}",) if event["id"] != event["internal_id"] else ())
        for event in answer["data"]
    ]
    _print_page(lines, answer.get("cursor"), "events")


@events.command("show")
@click.argument("event_id")
@_api_options
def events_show(event_id: str, url: str, signing_key: str | None) -> None:
    """Show an event (by the id sending it printed, or its internal id) with the runs it started."""
    path = urllib.parse.quote(event_id, safe="")
    click.echo(json.dumps(_request("GET", f"{url.rstrip('/')}/v1/events/{path}", signing_key)["data"], indent=2))


@main.group()
def tasks() -> None:
    """Inspect and cancel tracked tasks through the server's API."""


@tasks.command("list")
@click.option("--owner", default=None, help="Only this owner's tasks.")
@click.option(
    "--status", default=None, help="Only tasks in this status: pending, running, complete, failed, cancelled."
)
@click.option("--limit", type=int, default=50, show_default=True, help=f"Tasks per page, 1 to {_MAX_PAGE}.")
@click.option("--cursor", default=None, help="Show the page after the one that printed this cursor.")
@_api_options
def tasks_list(
    owner: str | None, status: str | None, limit: int, cursor: str | None, url: str, signing_key: str | None
) -> None:
    """List tasks, newest first: id, status, kind, owner and creation time (UTC), then the next page's cursor."""
    known = [value.value for value in records.TaskStatus]
    if status is not None and status.lower() not in known:
        _fail(f"--status must be one of {', '.join(known)} (got {status!r})", 2)
    query = _page_query(limit, cursor, owner=owner, status=status and status.lower())
    answer = _request("GET", f"{url.rstrip('/')}/v1/tasks?{query}", signing_key)
    lines = [
        (task["id"], task["status"], task["kind"], task["owner"], _utc(task["created_at"])) for task in answer["data"]
    ]
    _print_page(lines, answer.get("cursor"), "tasks")


@tasks.command("show")
@click.argument("task_id")
@_api_options
def tasks_show(task_id: str, url: str, signing_key: str | None) -> None:
    """Show a task: status, progress, result or error, and its run."""
    path = urllib.parse.quote(task_id, safe="")
    click.echo(json.dumps(_request("GET", f"{url.rstrip('/')}/v1/tasks/{path}", signing_key), indent=2))


@tasks.command("cancel")
@click.argument("task_id")
@_api_options
def tasks_cancel(task_id: str, url: str, signing_key: str | None) -> None:
    """Cancel a task that has not ended (its run stops before its next step)."""
    path = urllib.parse.quote(task_id, safe="")
    task = _request("POST", f"{url.rstrip('/')}/v1/tasks/{path}/cancel", signing_key)
    click.echo(f"{task_id} is {task['status']}")


def _page_query(limit: int, cursor: str | None, **filters: str | None) -> str:
    if not 1 <= limit <= _MAX_PAGE:
        _fail(f"--limit must be from 1 to {_MAX_PAGE} (got {limit})", 2)
    params = {key: value for key, value in filters.items() if value}
    params["limit"] = str(limit)
    if cursor:
        params["cursor"] = cursor
    return urllib.parse.urlencode(params)


def _print_page(lines: Sequence[tuple[str, ...]], cursor: str | None, what: str) -> None:
    """Aligned columns, then the cursor of the next page (or that this was the last one)."""
    if not lines:
        click.echo(f"no {what}")
    widths = [
        max(len(line[column]) for line in lines if column < len(line))
        for column in range(max(map(len, lines), default=0))
    ]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip())
    click.echo(f"next cursor: {cursor}" if cursor else "(last page)")


def _utc(millis: int) -> str:
    moment = datetime.datetime.fromtimestamp(millis // 1000, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


@main.group()
def keys() -> None:
    """Create keys for production."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new signing key and event key (set them on the server and in your apps)."""
    click.echo(f"STEPLINE_SIGNING_KEY={signing.generate_signing_key()}")
    click.echo(f"STEPLINE_EVENT_KEY={signing.generate_event_key()}")


# helpers
def _request(method: str, url: str, signing_key: str | None, *, json_body: Any = None) -> Any:
    headers = {}
    if signing_key:
        try:
            headers["Authorization"] = f"Bearer {signing.hash_signing_key(signing.validate_signing_key(signing_key))}"
        except errors.ConfigurationError as exc:
            _fail(str(exc), 2)
    try:
        reply = httpx.request(method, url, json=json_body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Stepline server at {url}: {exc}")
    try:
        answer = reply.json()
    except ValueError:
        answer = {"error": reply.text[:300]}
    if reply.status_code >= 400:
        message = answer.get("error") or answer.get("message") if isinstance(answer, dict) else answer
        _fail(f"server answered {reply.status_code}: {message}")
    return answer


def _check_database(url: str, pool_size: int) -> None:
    async def check() -> None:
        db = await open_store(url, pool_size=min(pool_size, 2))
        await db.close()

    try:
        asyncio.run(check())
    except errors.SteplineError as exc:
        _fail(str(exc))


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else url
    return url
