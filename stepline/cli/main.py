"""``stepline``: run the server, migrate, send events, inspect runs, events and tasks, make keys.

Every option can also be set with the ``STEPLINE_*`` variable named in its help. Errors end
with a one-line reason and a non-zero exit status, never a traceback (``console``): 1 when the
server or the database refused or could not be reached, 2 for a bad option or setting, 130 for
Ctrl-C. The server itself is in ``serve``; the API client in ``api``; the database checks in
``database``.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from stepline.cli import api, console, database, serve
from stepline.protocol import signing
from stepline.server import settings as settings_
from stepline.storage import records

DEFAULT_URL = f"http://127.0.0.1:{settings_.DEFAULT_PORT}"
_MAX_PAGE = 500
"""The largest page the server's list routes answer."""


class _Group(click.Group):
    """The command group, with Ctrl-C as exit status 130 and no 'Aborted!' (click's default
    is status 1, which scripts cannot tell from a failure)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            console.note("")  # end the line the terminal's ^C is on
            raise SystemExit(console.INTERRUPTED) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stepline", prog_name="stepline")  # also under python -m stepline.cli
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
                "--execute/--no-execute",
                "executes",
                envvar="STEPLINE_EXECUTE",
                default=True,
                show_default=True,
                help="Run functions (the executor, crons, the task sweeper, retention); --no-execute serves "
                "only the API and dashboard, for servers in front of workers sharing the database "
                "[STEPLINE_EXECUTE].",
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


@main.command()
@_server_options(dev=True)
def dev(**options: Any) -> None:
    """Run a dev server: SQLite at .stepline/dev.db, no keys needed, apps re-synced every 5 s."""
    serve.serve(True, **options)


@main.command()
@_server_options(dev=False)
def start(**options: Any) -> None:
    """Run a production server: requires --database-url, --signing-key and --event-key."""
    serve.serve(False, **options)


@main.command()
@click.option(
    "--database-url", envvar="STEPLINE_DATABASE_URL", required=True, help="Database to migrate [STEPLINE_DATABASE_URL]."
)
def migrate(database_url: str) -> None:
    """Create or update the database schema (safe to run again)."""
    database.check_url(database_url)
    database.check_opens(database_url, 1, write=False)
    console.echo(f"Database {database.redact(database_url)} is up to date.")


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
    base = api.server_url(url)
    event: dict[str, Any] = {"name": name, "data": _event_data(data)}
    if event_id is not None:
        if not event_id.strip():
            console.fail(
                "--id must not be empty: leave it out to let the server choose the event's id", console.BAD_INPUT
            )
        event["id"] = event_id
    _check_encodable(event)
    address = base + api.path("e", _given(event_key, "--event-key"))
    answer = api.request("POST", address, json_body=event, auth_hint=api.EVENT_KEY_HINT)
    console.echo(json.dumps(answer, indent=2))


def _event_data(text: str) -> dict[str, Any]:
    """``--data`` as a JSON object; NaN, Infinity and numbers too large for a double are refused
    here, as JSON has no such values (they would fail only when encoded for the request)."""

    def refuse_constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not a JSON value")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise ValueError(f"{number} is too large for a JSON number")
        return value

    try:
        payload = json.loads(text, parse_constant=refuse_constant, parse_float=finite)
    except (ValueError, RecursionError) as exc:
        console.fail(f"--data is not valid JSON: {exc}", console.BAD_INPUT)
    if not isinstance(payload, dict):
        kind = "array" if isinstance(payload, list) else "string" if isinstance(payload, str) else "value"
        console.fail(
            f"--data must be a JSON object such as '{{\"user_id\": 42}}' (got a JSON {kind})", console.BAD_INPUT
        )
    return payload


def _check_encodable(event: dict[str, Any]) -> None:
    """Text the shell passed that is not UTF-8 (undecodable bytes, lone surrogates) cannot be sent."""
    try:
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        console.fail(
            f"the event holds text that is not valid UTF-8 ({exc.reason}: {exc.object[exc.start : exc.end]!a})",
            console.BAD_INPUT,
        )


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


def _call(
    method: str, url: str, signing_key: str | None, *segments: str, query: str = ""
) -> tuple[dict[str, Any], str]:
    """The answer of ``method`` on the API path ``segments`` (each quoted whole), and its URL."""
    address = api.server_url(url) + api.path(*segments) + (f"?{query}" if query else "")
    return api.request(method, address, signing_key=signing_key), address


def _given(value: str, name: str) -> str:
    """An id the user gave, refused when empty: '' would name the route of the whole list."""
    if not value.strip():
        console.fail(f"{name} must not be empty", console.BAD_INPUT)
    return value


def _run_data(method: str, run_id: str, url: str, signing_key: str | None, *action: str) -> tuple[dict[str, Any], str]:
    """The ``data`` object of the answer about run ``run_id`` (and ``action`` on it), and its URL."""
    answer, address = _call(method, url, signing_key, "v1", "runs", _given(run_id, "RUN_ID"), *action)
    return api.field(answer, "data", dict, address), address


@runs.command("show")
@click.argument("run_id")
@_api_options
def runs_show(run_id: str, url: str, signing_key: str | None) -> None:
    """Show a run with its steps."""
    data, _ = _run_data("GET", run_id, url, signing_key)
    console.echo(json.dumps(data, indent=2))


@runs.command("cancel")
@click.argument("run_id")
@_api_options
def runs_cancel(run_id: str, url: str, signing_key: str | None) -> None:
    """Cancel a run that has not ended."""
    data, address = _run_data("POST", run_id, url, signing_key, "cancel")
    cancelled = api.field(data, "cancelled", bool, address)
    console.echo(f"cancelled {run_id}" if cancelled else f"{run_id} had already ended")


@runs.command("rerun")
@click.argument("run_id")
@_api_options
def runs_rerun(run_id: str, url: str, signing_key: str | None) -> None:
    """Start a new run of the same function with the same event."""
    data, address = _run_data("POST", run_id, url, signing_key, "rerun")
    console.echo(api.field(data, "run_id", str, address))


@runs.command("retry")
@click.argument("run_id")
@_api_options
def runs_retry(run_id: str, url: str, signing_key: str | None) -> None:
    """Retry a failed run from its failed step, keeping the results of the steps before it."""
    data, address = _run_data("POST", run_id, url, signing_key, "retry")
    console.echo(api.field(data, "run_id", str, address))


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
        console.fail(f"--status must be one of {', '.join(known)} (got {status!r})", console.BAD_INPUT)
    query = _page_query(limit, cursor, status=status and status.lower(), function_id=function_id)
    answer, address = _call("GET", url, signing_key, "v1", "runs", query=query)
    lines = [
        (
            api.field(run, "id", str, address),
            api.field(run, "status", str, address),
            api.field(run, "function_id", str, address),
            _utc(api.field(run, "created_at", int, address)),
            *_stop_reason(run),
        )
        for run in api.field(answer, "data", list, address)
    ]
    _print_page(lines, api.optional_str(answer, "cursor", address), "runs")


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
    answer, address = _call("GET", url, signing_key, "v1", "events", query=query)
    lines = []
    for event in api.field(answer, "data", list, address):
        internal_id, public_id = api.field(event, "internal_id", str, address), api.field(event, "id", str, address)
        line = (
            internal_id,
            api.field(event, "name", str, address),
            _utc(api.field(event, "received_at", int, address)),
        )
        lines.append(line + ((f"id={public_id}",) if public_id != internal_id else ()))
    _print_page(lines, api.optional_str(answer, "cursor", address), "events")


@events.command("show")
@click.argument("event_id")
@_api_options
def events_show(event_id: str, url: str, signing_key: str | None) -> None:
    """Show an event (by the id sending it printed, or its internal id) with the runs it started."""
    answer, address = _call("GET", url, signing_key, "v1", "events", _given(event_id, "EVENT_ID"))
    console.echo(json.dumps(api.field(answer, "data", dict, address), indent=2))


@main.group()
def tasks() -> None:
    """Inspect and cancel tracked tasks through the server's API."""


@tasks.command("list")
@click.option("--owner", default=None, help="Only this owner's tasks.")
@click.option(
    "--status", default=None, help="Only tasks in this status: pending, running, complete, failed, cancelled."
)
@click.option("--kind", default=None, help="Only tasks of this kind.")
@click.option("--limit", type=int, default=50, show_default=True, help=f"Tasks per page, 1 to {_MAX_PAGE}.")
@click.option("--cursor", default=None, help="Show the page after the one that printed this cursor.")
@_api_options
def tasks_list(
    owner: str | None,
    status: str | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
    url: str,
    signing_key: str | None,
) -> None:
    """List tasks, newest first: id, status, kind, owner and creation time (UTC), then the next page's cursor."""
    known = [value.value for value in records.TaskStatus]
    if status is not None and status.lower() not in known:
        console.fail(f"--status must be one of {', '.join(known)} (got {status!r})", console.BAD_INPUT)
    query = _page_query(limit, cursor, owner=owner, status=status and status.lower(), kind=kind)
    answer, address = _call("GET", url, signing_key, "v1", "tasks", query=query)
    lines = [
        (
            api.field(task, "id", str, address),
            api.field(task, "status", str, address),
            api.field(task, "kind", str, address),
            api.field(task, "owner", str, address),
            _utc(api.field(task, "created_at", int, address)),
        )
        for task in api.field(answer, "data", list, address)
    ]
    _print_page(lines, api.optional_str(answer, "cursor", address), "tasks")


@tasks.command("show")
@click.argument("task_id")
@_api_options
def tasks_show(task_id: str, url: str, signing_key: str | None) -> None:
    """Show a task: status, progress, result or error, and its run."""
    answer, _ = _call("GET", url, signing_key, "v1", "tasks", _given(task_id, "TASK_ID"))
    console.echo(json.dumps(answer, indent=2))


@tasks.command("cancel")
@click.argument("task_id")
@_api_options
def tasks_cancel(task_id: str, url: str, signing_key: str | None) -> None:
    """Cancel a task that has not ended (its run stops before its next step)."""
    answer, address = _call("POST", url, signing_key, "v1", "tasks", _given(task_id, "TASK_ID"), "cancel")
    console.echo(f"{task_id} is {api.field(answer, 'status', str, address)}")


def _page_query(limit: int, cursor: str | None, **filters: str | None) -> str:
    if not 1 <= limit <= _MAX_PAGE:
        console.fail(f"--limit must be from 1 to {_MAX_PAGE} (got {limit})", console.BAD_INPUT)
    params = {key: value for key, value in filters.items() if value}
    params["limit"] = str(limit)
    if cursor:
        params["cursor"] = cursor
    return api.query(params)


def _print_page(lines: Sequence[tuple[str, ...]], cursor: str | None, what: str) -> None:
    """Aligned columns, then the cursor of the next page (or that this was the last one)."""
    if not lines:
        console.echo(f"no {what}")
    widths = [
        max(len(line[column]) for line in lines if column < len(line))
        for column in range(max(map(len, lines), default=0))
    ]
    for line in lines:
        console.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip())
    console.echo(f"next cursor: {cursor}" if cursor else "(last page)")


def _utc(millis: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(millis // 1000, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(millis)  # not a time this machine can show: the number, rather than no line at all
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


@main.group()
def keys() -> None:
    """Create keys for production."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new signing key and event key (set them on the server and in your apps)."""
    console.echo(
        f"STEPLINE_SIGNING_KEY={signing.generate_signing_key()}\nSTEPLINE_EVENT_KEY={signing.generate_event_key()}"
    )
