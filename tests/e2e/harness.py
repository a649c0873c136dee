"""Processes and HTTP helpers for end-to-end tests: the real server and real apps as subprocesses.

``ServerProcess`` runs ``python -m stepline.cli dev|start`` and ``AppProcess`` runs uvicorn (or
another command) on a module under ``tests/e2e/apps``; both log to a file that failure
messages quote. ``Api`` talks to the server over HTTP: send events, sync apps, read, wait for
and cancel runs. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from stepline.protocol import signing
from stepline.storage import open_store
from stepline.storage.store import Store
from stepline.storage.url import parse_database_url

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SIGNING_KEY = "signkey-prod-" + "5eed" * 16
WRONG_SIGNING_KEY = "signkey-prod-" + "bad0" * 16
EVENT_KEY = "e2e-event-key-for-tests"
ENDED = frozenset({"completed", "failed", "cancelled", "skipped"})

T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


class Process:
    """A subprocess whose output goes to a log file; stopped with SIGTERM, or killed with SIGKILL."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.env = dict(env or {})
        self.popen: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is already running"
        with self.log.open("ab") as out:
            out.write(f"\n--- {' '.join(self.command)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def logs(self) -> str:
        return _tail(self.log)

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.logs()}")

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout`` s; the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.popen is not None, f"{self.name} was never started"
        assert self.popen.poll() is None, f"{self.name} is not running"
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


class ServerProcess(Process):
    """``stepline dev`` or ``stepline start`` on a fixed port and database."""

    def __init__(
        self,
        database_url: str,
        log: Path,
        *,
        production: bool = False,
        port: int | None = None,
        app_urls: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        signing_key: str = SIGNING_KEY,
        event_key: str = EVENT_KEY,
    ) -> None:
        self.port = port or free_port()
        self.production = production
        self.database_url = database_url
        self.signing_key = signing_key if production else None
        self.event_key = event_key if production else "dev-any-key"
        command = [
            sys.executable,
            "-m",
            "stepline.cli",
            "start" if production else "dev",
            "--port",
            str(self.port),
            "--database-url",
            database_url,
        ]
        if production:
            command += ["--signing-key", signing_key, "--event-key", event_key]
        for url in app_urls:
            command += ["-u", url]
        command += list(extra_args)
        # The server must not pick up keys or a database from the developer's environment.
        env = {name: "" for name in os.environ if name.startswith(("STEPLINE_", "INNGEST_"))}
        super().__init__(f"server:{self.port}", command, log, env)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        def healthy() -> bool:
            self.check_alive()
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, timeout, f"{self.name} to answer GET /health")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def api(self, signing_key: str | None = None) -> Api:
        return Api(self.url, signing_key or self.signing_key, self.event_key, self)


class AppProcess(Process):
    """An app under ``tests/e2e/apps`` on uvicorn (or any command serving ``serve_path``)."""

    def __init__(
        self,
        target: str,
        log: Path,
        env: Mapping[str, str],
        *,
        serve_path: str,
        port: int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.serve_path = serve_path
        self.target = target
        if command is None:
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                target,
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
        command = [part.replace("{port}", str(self.port)) for part in command]
        clean = {name: "" for name in os.environ if name.startswith(("STEPLINE_", "INNGEST_"))}
        super().__init__(f"app:{target}:{self.port}", command, log, {**clean, **env})

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.serve_path}"

    def start(self, timeout: float = 30) -> AppProcess:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def up() -> bool:
            self.check_alive()
            return _answers(self.url)

        try:
            wait_for(up, timeout, f"{self.name} to answer GET {self.serve_path}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


def inngest_env(
    server: ServerProcess, log: Path, *, signing_key: str | None = None, app_id: str = ""
) -> dict[str, str]:
    """Environment of an Inngest app pointed at ``server`` (dev mode unless the server is production)."""
    env = {"INNGEST_BASE_URL": server.url, "INNGEST_EVENT_KEY": server.event_key, "E2E_STEP_LOG": str(log)}
    if server.production:
        env["INNGEST_SIGNING_KEY"] = signing_key or SIGNING_KEY
        env["INNGEST_DEV"] = "0"
    else:
        env["INNGEST_DEV"] = "1"
    if app_id:
        env["E2E_APP_ID"] = app_id
    return env


def stepline_env(
    server: ServerProcess, log: Path, *, signing_key: str | None = None, app_id: str = ""
) -> dict[str, str]:
    """Environment of a Stepline app pointed at ``server``."""
    env = {"STEPLINE_BASE_URL": server.url, "STEPLINE_EVENT_KEY": server.event_key, "E2E_STEP_LOG": str(log)}
    if server.production:
        env["STEPLINE_SIGNING_KEY"] = signing_key or SIGNING_KEY
    else:
        env["STEPLINE_DEV"] = "1"
    if app_id:
        env["E2E_APP_ID"] = app_id
    return env


class Api:
    """The server's HTTP API, as a client (bearer signing key when given)."""

    def __init__(self, base_url: str, signing_key: str | None, event_key: str, server: ServerProcess | None = None):
        self.base_url = base_url
        self.event_key = event_key
        self.server = server
        headers = {"Authorization": f"Bearer {signing_key}"} if signing_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30)

    def close(self) -> None:
        self.http.close()

    def _context(self) -> str:
        return f"\nserver log:\n{self.server.logs()}" if self.server is not None else ""

    def sync(self, app_url: str) -> dict[str, Any]:
        reply = self.http.post("/v1/apps/sync", json={"url": app_url})
        assert reply.status_code == 200, f"sync of {app_url} failed: {reply.status_code} {reply.text}{self._context()}"
        answer: dict[str, Any] = reply.json()
        return answer

    def functions(self) -> list[dict[str, Any]]:
        reply = self.http.get("/v1/functions")
        assert reply.status_code == 200, reply.text
        data: list[dict[str, Any]] = reply.json()["data"]
        return data

    def wait_synced(self, function_ids: Sequence[str], timeout: float = 15) -> None:
        """Wait until the server knows every function in ``function_ids``."""
        wanted = set(function_ids)
        wait_for(lambda: wanted <= {fn["id"] for fn in self.functions()}, timeout, f"functions {sorted(wanted)}")

    def post_events(self, body: Any, key: str | None = None) -> httpx.Response:
        return self.http.post(f"/e/{key or self.event_key}", json=body)

    def send(self, name: str, data: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Send one event; the answer ``{"ids", "run_ids", "status"}``."""
        reply = self.post_events({"name": name, "data": dict(data or {}), **fields})
        assert reply.status_code == 200, f"sending {name} failed: {reply.status_code} {reply.text}"
        answer: dict[str, Any] = reply.json()
        return answer

    def start(self, name: str, data: Mapping[str, Any] | None = None) -> str:
        """Send one event that starts exactly one run; its id."""
        run_ids = self.send(name, data)["run_ids"]
        assert len(run_ids) == 1, f"{name} started {len(run_ids)} runs, expected 1{self._context()}"
        run_id: str = run_ids[0]
        return run_id

    def get_run(self, run_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/v1/runs/{run_id}")
        assert reply.status_code == 200, f"GET run {run_id}: {reply.status_code} {reply.text}"
        data: dict[str, Any] = reply.json()["data"]
        return data

    def wait_for_run(self, run_id: str, timeout: float = 30, statuses: frozenset[str] = ENDED) -> dict[str, Any]:
        """The run once its status is in ``statuses`` (ended by default)."""
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            nonlocal last
            last = self.get_run(run_id)
            return last if last["status"] in statuses else None

        try:
            return wait_for(reached, timeout, f"run {run_id} to reach {sorted(statuses)}", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {last}{self._context()}") from None

    def run_and_wait(self, name: str, data: Mapping[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for_run(self.start(name, data), timeout)

    def cancel(self, run_id: str) -> dict[str, Any]:
        reply = self.http.post(f"/v1/runs/{run_id}/cancel")
        assert reply.status_code == 200, f"cancel {run_id}: {reply.status_code} {reply.text}"
        data: dict[str, Any] = reply.json()["data"]
        return data


def step_named(run: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The step of ``run`` called ``name``; AssertionError listing the steps when absent."""
    for step in run["steps"]:
        if step["name"] == name:
            found: dict[str, Any] = step
            return found
    raise AssertionError(f"run {run['id']} has no step {name!r}; steps: {[s['name'] for s in run['steps']]}")


def assert_error_body(reply: httpx.Response, status: int) -> dict[str, Any]:
    """``reply`` has ``status`` and the JSON body ``{"error": <non-empty str>, "status": status}``."""
    assert reply.status_code == status, f"expected HTTP {status}, got {reply.status_code}: {reply.text[:500]}"
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    body: dict[str, Any] = reply.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert body["error"], body
    assert body.get("status") == status, body
    return body


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    """Stop ``processes`` (SIGTERM) on the way out, whatever happened."""
    try:
        yield
    finally:
        for process in reversed(processes):
            process.stop()


def read_store(database_url: str, reader: Callable[[Store], Awaitable[T]]) -> T:
    """What ``reader`` finds in the database, read by a fresh store (as another process would)."""

    async def read() -> T:
        db = await open_store(database_url, pool_size=1)
        try:
            return await reader(db)
        finally:
            await db.close()

    return asyncio.run(read())


def waiting_runs(database_url: str, event_name: str) -> set[str]:
    """Runs with a pause (``wait_for_event``) on ``event_name``."""

    async def reader(db: Store) -> set[str]:
        async with db.transaction() as tx:
            return {pause.run_id for pause in await tx.pauses_for_event(event_name)}

    return read_store(database_url, reader)


def count_rows(database_url: str) -> dict[str, int]:
    """Rows in each table that a request could write (events, runs, steps, queue, pauses, apps, functions)."""
    tables = ("events", "runs", "steps", "queue", "pauses", "apps", "functions")
    parsed = parse_database_url(database_url)
    if parsed.backend == "sqlite":
        with contextlib.closing(sqlite3.connect(parsed.target, timeout=30)) as conn:
            return {table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) for table in tables}
    with psycopg.connect(parsed.target) as pg:
        counts: dict[str, int] = {}
        for table in tables:
            row = pg.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            assert row is not None
            counts[table] = int(row[0])
        return counts


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None."""
    candidates: set[str] = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.254.254.254", 1))  # UDP connect sends nothing; it only picks a route
        candidates.add(probe.getsockname()[0])
    with contextlib.suppress(OSError):
        candidates.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    for address in sorted(candidates):
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None


def connects(host: str, port: int) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def register_with_key(api: Api, app_url: str, app_key: str) -> dict[str, Any]:
    """Register the app at ``app_url`` as if it had synced, though its signing key may differ from the server's.

    The app's configuration comes from an in-band sync request signed with ``app_key`` (which the
    app accepts), and goes to ``/fn/register`` with the server's own bearer: what a deployment
    synced with the right key and then redeployed with ``app_key`` looks like to the server.
    """
    body = signing.canonical_json({"url": app_url})
    headers = {
        "Content-Type": "application/json",
        "X-Inngest-Server-Kind": "cloud",
        "X-Inngest-Sync-Kind": "in_band",
        signing.SIGNATURE_HEADER: signing.sign(body, app_key, int(time.time())),
    }
    reply = httpx.put(app_url, content=body, headers=headers, timeout=10)
    assert reply.status_code == 200, f"in-band sync of {app_url}: {reply.status_code} {reply.text}"
    config = reply.json()
    payload = {"appName": config["app_id"], "url": config["url"], "functions": config["functions"]}
    registered = api.http.post("/fn/register", json=payload)
    assert registered.status_code == 200, registered.text
    answer: dict[str, Any] = registered.json()
    return answer
