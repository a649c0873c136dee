"""HTTP benchmark: a ``stepline dev`` server and a FastAPI app, each its own process, on 127.0.0.1.

::

    .venv/bin/python bench/http.py [--backend sqlite|postgres|both] [--runs 2000] [--latency-samples 200]

For each backend, with a fresh database (a temporary SQLite file; a new PostgreSQL database
created on the server of ``--postgres-url`` and dropped at the end), the script starts
``stepline dev`` and the app of ``bench/http_app.py`` (function ``three``: three trivial async
steps) on free ports, syncs the app, then measures:

* ingest: events/s accepted by ``POST /e/{key}``, in batches of ``--batch`` from one client and
  as single events from ``--clients`` concurrent clients, with an event no function listens to;
* execution throughput: ``--runs`` events that each start a run of ``three``, sent in batches;
  the time from the first POST until the last run ended (its ``ended_at``), as runs/s and steps/s;
* latency: with the system idle, one event at a time, the time from the POST until
  ``GET /v1/runs/{id}`` (polled every 2 ms) shows the run completed.

Each case also reports the CPU the server, the app and this process used (from ``/proc``), which
says which process limited it; the machine's load average is printed as the figures move with it.

``--profile DIR`` records the throughput case with py-spy on the server and the app processes and
prints their hotspots (figures of a profiled case are not comparable).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/http.py``, this file's directory is first on sys.path, where this very file
# would shadow the standard library's ``http`` package (which httpx imports). Put the repository
# root there instead, so ``bench.support`` imports.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any, Protocol

import httpx
import psycopg

from bench import support

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
EVENT_KEY = "bench"
"""Any key will do: a dev server without ``--event-key`` accepts every one."""
EVENT_NAME = "bench/http-three"
"""What function ``three`` of ``bench/http_app.py`` listens to (not imported: the app module warns
when imported without ``STEPLINE_DEV``)."""
SERVE_PATH = "/api/stepline"
INGEST_ONLY_EVENT = "bench/http-ingest-only"
"""No function listens to it: the ingest figures are the cost of accepting and storing events."""
STEPS_PER_RUN = 3
EXPECTED_OUTPUT = 6
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
THROUGHPUT_WARMUP_RUNS = 10
"""Runs completed before the timed window, so that imports, connections and caches are warm."""
COUNT_POLL_S = 0.1
"""How often the throughput case counts terminal runs in the database (read-only, from this process).
Only detects the end: the figure uses the last run's ``ended_at``, not the moment of detection."""
LATENCY_POLL_S = 0.002
LATENCY_RUN_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
PROFILE_RATE = 100
"""py-spy samples per second. Each sample pauses the process for a moment (not ``--nonblocking``, whose
stacks, read while the process runs, are often torn), which slows it by a few per cent."""


class BenchError(Exception):
    """Setting a backend up failed (a process did not start, the sync failed ...)."""


# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (Linux ``/proc``), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    found = {name: cpu_seconds(pid) for name, pid in pids.items()}
    snapshot = {name: seconds for name, seconds in found.items() if seconds is not None}
    snapshot["bench"] = time.process_time()
    return snapshot


def _cpu_since(pids: dict[str, int], before: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used since the ``before`` snapshot."""
    after = _cpu_snapshot(pids)
    return {name: after[name] - seconds for name, seconds in before.items() if name in after}


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without Stepline settings or proxies (everything stays on 127.0.0.1)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STEPLINE_", "INNGEST_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(NO_PROXY=HOST, no_proxy=HOST, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Process:
    """A child process with its output in a log file; ``stop`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.popen = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(sig)
                try:
                    self.popen.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print(f"  warning: {self.name} (pid {self.pid}) did not stop in {STOP_TIMEOUT_S:.0f} s: killed")
                    self.popen.kill()
                    self.popen.wait()
        finally:
            self._log.close()

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])


def wait_ready(process: Process, url: str) -> None:
    """Until ``url`` answers 200; BenchError if the process exits or ``STARTUP_TIMEOUT_S`` passes."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while True:
            if process.exited():
                raise BenchError(f"{process.name} exited with status {process.popen.returncode}:\n{process.log_tail()}")
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{process.name} did not answer {url} in {STARTUP_TIMEOUT_S:.0f} s:\n{process.log_tail()}"
                )
            time.sleep(0.05)


# databases: created here, read (read-only) here to see runs end, dropped here


class RunCounter(Protocol):
    def status_counts(self) -> dict[str, int]: ...

    def scalar(self, sql: str) -> int | None: ...

    def close(self) -> None: ...


class SQLiteCounter:
    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    def status_counts(self) -> dict[str, int]:
        found = self._conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in found}

    def scalar(self, sql: str) -> int | None:
        row = self._conn.execute(sql).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        self._conn.close()


class PostgresCounter:
    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute("SET default_transaction_read_only = on")

    def status_counts(self) -> dict[str, int]:
        found = self._conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in found}

    def scalar(self, sql: str) -> int | None:
        row = self._conn.execute(sql).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        self._conn.close()


@dataclasses.dataclass(slots=True)
class Database:
    backend: str
    url: str
    sqlite_path: Path | None = None

    def counter(self) -> RunCounter:
        if self.sqlite_path is not None:
            return SQLiteCounter(self.sqlite_path)
        return PostgresCounter(self.url)


class DatabaseFactory:
    """A fresh database per backend; every one removed by ``cleanup``."""

    def __init__(self, postgres_admin_url: str) -> None:
        self._admin_url = postgres_admin_url
        self._tmp = tempfile.TemporaryDirectory(prefix="stepline-bench-http-")
        self.tmp = Path(self._tmp.name)
        self._created: list[str] = []

    def postgres_unavailable_reason(self) -> str | None:
        return support.postgres_unavailable_reason(self._admin_url)

    @contextlib.contextmanager
    def fresh(self, backend: str) -> Iterator[Database]:
        if backend == "sqlite":
            path = self.tmp / "sqlite.db"
            yield Database("sqlite", f"sqlite:///{path}", path)
            return
        name = f"stepline_bench_http_{os.getpid()}"
        url = support.create_database(self._admin_url, name)
        self._created.append(name)
        try:
            yield Database("postgres", url)
        finally:
            self._drop(name)

    def _drop(self, name: str) -> None:
        try:
            support.drop_database(self._admin_url, name)
            self._created.remove(name)
        except psycopg.Error as exc:
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)

    def cleanup(self) -> None:
        for name in list(self._created):
            self._drop(name)
        self._tmp.cleanup()


# results


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    runs: int
    batch: int
    ingest_events: int
    single_events: int
    clients: int
    latency_samples: int
    latency_warmup: int
    timeout_s: float
    concurrency: int
    pool_size: int
    profile_dir: Path | None
    skip_ingest: bool = False
    skip_latency: bool = False


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclasses.dataclass(slots=True)
class IngestResult:
    batch_events: int = 0
    batch_s: float = 0.0
    single_events: int = 0
    single_s: float = 0.0
    single_request_ms: list[float] = dataclasses.field(default_factory=list)
    batch_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    single_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    """CPU seconds each process used while the batches (the single events) were sent."""
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def batch_eps(self) -> float:
        return self.batch_events / self.batch_s if self.batch_s > 0 else 0.0

    @property
    def single_eps(self) -> float:
        return self.single_events / self.single_s if self.single_s > 0 else 0.0


@dataclasses.dataclass(slots=True)
class ThroughputResult:
    runs: int
    finished: int = 0
    """Runs of the timed batch that were terminal when the window closed (``runs`` unless it timed out)."""
    send_s: float = 0.0
    wall_s: float = 0.0
    """First POST to the last run's ``ended_at``; on a timeout, to the moment the wait gave up."""
    detected_s: float = 0.0
    """First POST to the poll that saw every run terminal."""
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    steps_recorded: int = 0
    queue_left: int = 0
    app_calls: int = 0
    max_in_flight: int = 0
    """The most calls the app had in progress at once during the window."""
    cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)
    """CPU seconds each process (server, app, this one) used from the first POST to the end seen."""
    errors: list[str] = dataclasses.field(default_factory=list)
    profiled: bool = False

    @property
    def timed_out(self) -> bool:
        return self.finished < self.runs

    @property
    def ok(self) -> bool:
        total = self.runs + THROUGHPUT_WARMUP_RUNS
        return not self.timed_out and not self.errors and self.statuses.get("completed", 0) == total

    @property
    def runs_per_s(self) -> float:
        return self.finished / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.runs_per_s * STEPS_PER_RUN


@dataclasses.dataclass(slots=True)
class LatencyResult:
    samples_ms: list[float] = dataclasses.field(default_factory=list)
    server_ms: list[float] = dataclasses.field(default_factory=list)
    """The run's ``ended_at - created_at``, as the server recorded it (ms resolution)."""
    polls: list[int] = dataclasses.field(default_factory=list)
    """``GET /v1/runs/{id}`` requests per sample (warm-up included)."""
    failures: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class BackendResult:
    backend: str
    ingest: IngestResult | None = None
    throughput: ThroughputResult | None = None
    latency: LatencyResult | None = None
    error: str | None = None
    log_issues: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing failed (a case skipped by a flag is not a failure)."""
        return (
            self.error is None
            and not (self.ingest is not None and self.ingest.errors)
            and self.throughput is not None
            and self.throughput.ok
            and not (self.latency is not None and self.latency.failures)
        )


# the cases


def _events_body(name: str, first: int, count: int) -> bytes:
    return json.dumps([{"name": name, "data": {"i": i}} for i in range(first, first + count)]).encode()


class Answer(Protocol):
    """What the cases read of an HTTP answer: an ``httpx.Response`` or a ``RawReply``."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RawReply:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class RawClient:
    """A minimal HTTP/1.1 client on one keep-alive connection, for the single-event ingest and the
    latency cases: it writes a request in one go and reads a Content-Length or chunked answer.

    httpx spends about as much CPU on a small request as the server spends storing an event (over
    2 ms on a small machine), and this process shares the cores with the server and the app: with
    httpx, the single-event figure measured the client, and the latency polls slowed the server.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or HOST
        self._port = parts.port or 80
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> RawReply:
        try:
            return await asyncio.wait_for(self._exchange(method, path, body, headers or {}), REQUEST_TIMEOUT_S)
        except BaseException:
            self._drop()  # the connection may be mid-answer: never reuse it
            raise

    async def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> RawReply:
        reused = self._streams is not None
        try:
            return await self._exchange_once(method, path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            partial = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
            if not reused or partial:
                raise
            # The server closed the idle keep-alive connection as the request went out (uvicorn
            # does after 5 s without a request): nothing was answered, so send it on a new one.
            self._drop()
            return await self._exchange_once(method, path, body, headers)

    async def _exchange_once(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> RawReply:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode("ascii") + b"\r\n" + (body or b""))
        status_line, _, header_block = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        answered: dict[bytes, bytes] = {}
        for line in header_block.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if colon:
                answered[name.strip().lower()] = value.strip()
        if answered.get(b"transfer-encoding", b"").lower() == b"chunked":
            content = await self._read_chunked(reader)
        else:
            content = await reader.readexactly(int(answered.get(b"content-length", b"0")))
        if answered.get(b"connection", b"").lower() == b"close":
            self._drop()
        return RawReply(int(status_line.split()[1]), content)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # the empty trailer section
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def _drop(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._drop()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _check_answer(reply: Answer, events: int, runs: int, errors: list[str]) -> list[str]:
    """The run ids of a ``POST /e`` answer; a wrong status or count goes to ``errors``."""
    if reply.status_code != 200:
        errors.append(f"POST /e answered {reply.status_code}: {reply.text[:200]}")
        return []
    answer = reply.json()
    run_ids = [str(run_id) for run_id in answer.get("run_ids", [])]
    if len(answer.get("ids", [])) != events or len(run_ids) != runs:
        errors.append(
            f"POST /e of {events} event(s) answered {len(answer.get('ids', []))} id(s), {len(run_ids)} run(s)"
        )
    return run_ids


JSON_HEADERS = {"Content-Type": "application/json"}


async def measure_ingest(
    http: httpx.AsyncClient, server_url: str, config: Config, pids: dict[str, int]
) -> IngestResult:
    result = IngestResult()
    path = f"/e/{EVENT_KEY}"
    # batches, one client
    bodies = [
        _events_body(INGEST_ONLY_EVENT, first, min(config.batch, config.ingest_events - first))
        for first in range(0, config.ingest_events, config.batch)
    ]
    warm = bodies[0]  # the same events once more, untimed: their ids differ
    _check_answer(await http.post(path, content=warm, headers=JSON_HEADERS), warm.count(b'"name"'), 0, result.errors)
    cpu = _cpu_snapshot(pids)
    start = time.perf_counter()
    for body in bodies:
        _check_answer(
            await http.post(path, content=body, headers=JSON_HEADERS), body.count(b'"name"'), 0, result.errors
        )
    result.batch_s = time.perf_counter() - start
    result.batch_cpu_s = _cpu_since(pids, cpu)
    result.batch_events = config.ingest_events
    # single events, several clients at once
    single = [json.dumps({"name": INGEST_ONLY_EVENT, "data": {"i": i}}).encode() for i in range(config.single_events)]
    clients = [RawClient(server_url) for _ in range(config.clients)]
    try:
        for client in clients:  # connect first: the timed part is requests on open connections
            _check_answer(await client.request("POST", path, single[0]), 1, 0, result.errors)

        async def post_all(client: RawClient, share: list[bytes]) -> None:
            for body in share:
                began = time.perf_counter()
                reply = await client.request("POST", path, body)
                result.single_request_ms.append((time.perf_counter() - began) * 1000)
                _check_answer(reply, 1, 0, result.errors)

        cpu = _cpu_snapshot(pids)
        start = time.perf_counter()
        await asyncio.gather(*(post_all(client, single[k :: len(clients)]) for k, client in enumerate(clients)))
        result.single_s = time.perf_counter() - start
        result.single_cpu_s = _cpu_since(pids, cpu)
        result.single_events = len(single)
    finally:
        for client in clients:
            await client.close()
    return result


async def _wait_terminal(counter: RunCounter, total: int, deadline: float) -> int:
    """Poll until ``total`` runs are terminal or ``deadline`` (perf_counter) passes; how many are."""
    while True:
        counts = counter.status_counts()
        terminal = sum(counts.get(status, 0) for status in TERMINAL_STATUSES)
        if terminal >= total or time.perf_counter() >= deadline:
            return terminal
        await asyncio.sleep(COUNT_POLL_S)


async def _app_calls(app: httpx.AsyncClient) -> tuple[int, int]:
    """Calls the app's serve endpoint received so far, and the most in progress at once since the last ask."""
    answer = (await app.get("/bench/calls")).json()
    return int(answer["calls"]), int(answer["max_in_flight"])


async def measure_throughput(
    http: httpx.AsyncClient,
    app: httpx.AsyncClient,
    counter: RunCounter,
    config: Config,
    pids: dict[str, int],
    profiler: Profiler | None,
) -> ThroughputResult:
    result = ThroughputResult(runs=config.runs, profiled=profiler is not None)
    path = f"/e/{EVENT_KEY}"
    reply = await http.post(path, content=_events_body(EVENT_NAME, 0, THROUGHPUT_WARMUP_RUNS), headers=JSON_HEADERS)
    _check_answer(reply, THROUGHPUT_WARMUP_RUNS, THROUGHPUT_WARMUP_RUNS, result.errors)
    total = THROUGHPUT_WARMUP_RUNS + config.runs
    if (
        await _wait_terminal(counter, THROUGHPUT_WARMUP_RUNS, time.perf_counter() + config.timeout_s)
        < THROUGHPUT_WARMUP_RUNS
    ):
        result.errors.append(f"the {THROUGHPUT_WARMUP_RUNS} warm-up runs did not end in {config.timeout_s:.0f} s")
        return result
    bodies = [
        _events_body(EVENT_NAME, first, min(config.batch, config.runs - first))
        for first in range(0, config.runs, config.batch)
    ]
    calls_before, _ = await _app_calls(app)
    if profiler is not None:
        profiler.start()
    try:
        cpu_before = _cpu_snapshot(pids)
        start_epoch = time.time()
        start = time.perf_counter()
        for body in bodies:
            count = body.count(b'"name"')
            _check_answer(await http.post(path, content=body, headers=JSON_HEADERS), count, count, result.errors)
        result.send_s = time.perf_counter() - start
        terminal = await _wait_terminal(counter, total, start + config.timeout_s)
        result.detected_s = time.perf_counter() - start
        result.cpu_s = _cpu_since(pids, cpu_before)
    finally:
        if profiler is not None:
            profiler.stop()
    calls_after, result.max_in_flight = await _app_calls(app)
    result.app_calls = calls_after - calls_before
    result.finished = terminal - THROUGHPUT_WARMUP_RUNS
    result.statuses = counter.status_counts()
    last_ended = counter.scalar("SELECT max(ended_at) FROM runs")
    if result.timed_out or last_ended is None:
        result.wall_s = result.detected_s
    else:
        result.wall_s = last_ended / 1000 - start_epoch
    result.steps_recorded = counter.scalar("SELECT count(*) FROM steps") or 0
    result.queue_left = counter.scalar("SELECT count(*) FROM queue") or 0
    return result


async def _poll_run(http: RawClient, run_id: str, deadline: float, polls: list[int]) -> dict[str, Any] | None:
    """The run once it is terminal, or None if ``deadline`` (perf_counter) passes first; appends
    the number of GETs it took to ``polls``."""
    count = 0
    while True:
        count += 1
        reply = await http.request("GET", f"/v1/runs/{run_id}")
        if reply.status_code == 200:
            run: dict[str, Any] = reply.json()["data"]
            if run["status"] in TERMINAL_STATUSES:
                polls.append(count)
                return run
        elif reply.status_code != 404:
            raise BenchError(f"GET /v1/runs/{run_id} answered {reply.status_code}: {reply.text[:200]}")
        if time.perf_counter() >= deadline:
            polls.append(count)
            return None
        await asyncio.sleep(LATENCY_POLL_S)


async def measure_latency(server_url: str, config: Config) -> LatencyResult:
    http = RawClient(server_url)
    try:
        return await _latency_samples(http, config)
    finally:
        await http.close()


async def _latency_samples(http: RawClient, config: Config) -> LatencyResult:
    result = LatencyResult()
    path = f"/e/{EVENT_KEY}"
    for i in range(config.latency_warmup + config.latency_samples):
        await asyncio.sleep(0.005)  # let the server settle back to idle
        body = json.dumps({"name": EVENT_NAME, "data": {"latency": i}}).encode()
        errors: list[str] = []
        start = time.perf_counter()
        run_ids = _check_answer(await http.request("POST", path, body), 1, 1, errors)
        if errors:
            result.failures += errors
            continue
        run = await _poll_run(http, run_ids[0], start + LATENCY_RUN_TIMEOUT_S, result.polls)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if run is None:
            result.failures.append(f"run {run_ids[0]} not terminal after {LATENCY_RUN_TIMEOUT_S:.0f} s")
        elif run["status"] != "completed" or run.get("output") != EXPECTED_OUTPUT:
            result.failures.append(f"run {run_ids[0]}: status {run['status']}, output {run.get('output')!r}")
        elif i >= config.latency_warmup:
            result.samples_ms.append(elapsed_ms)
            result.server_ms.append(float(run["ended_at"] - run["created_at"]))
    return result


# profiling with py-spy


@dataclasses.dataclass(slots=True)
class CallNode:
    """A node of the call tree: samples in this function with this call path (callees included)."""

    count: int = 0
    children: dict[str, CallNode] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Profile:
    name: str
    path: Path
    samples: int = 0
    """Samples on CPU: idle ones (a thread waiting in ``select`` or on a condition) left out."""
    idle: int = 0
    threads: set[str] = dataclasses.field(default_factory=set)
    self_time: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_area: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    tree: CallNode = dataclasses.field(default_factory=CallNode)


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
_IDLE_LEAVES = ("EpollSelector.select", "KqueueSelector.select", "Condition.wait", "Event.wait")
"""Where an idle thread waits: the event loop for I/O, a worker thread for work. py-spy does not
always recognise these as idle."""


def _short_file(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.removeprefix(f"{REPO_ROOT}/")


def _area(file: str) -> str:
    """What a frame's time is attributed to: a module of stepline, or a top-level package."""
    parts = file.split("/")
    if parts[0] == "stepline":
        return file.removesuffix(".py")
    return parts[0].removesuffix(".py")


def read_profile(name: str, path: Path) -> Profile:
    """Aggregate py-spy's raw output (``thread (tid);frame;...;frame count`` lines) per function."""
    profile = Profile(name, path)
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("thread "):
            profile.threads.add(frames.pop(0))
        matches = [_FRAME.match(frame) for frame in frames]
        names = [
            f"{m['function']} ({_short_file(m['file'])})" if m else frame
            for m, frame in zip(matches, frames, strict=True)
        ]
        if not names or names[-1].split(" (")[0] in _IDLE_LEAVES:
            profile.idle += count
            continue
        profile.samples += count
        profile.self_time[names[-1]] += count
        leaf = matches[-1]
        profile.by_area[_area(_short_file(leaf["file"])) if leaf else "?"] += count
        node = profile.tree
        node.count += count
        for frame_name in names:
            node = node.children.setdefault(frame_name, CallNode())
            node.count += count
    return profile


def _tree_lines(node: CallNode, total: int, floor: float, indent: int = 0) -> list[str]:
    """The call tree's nodes of at least ``floor`` of ``total``, heaviest first; a chain of calls
    through which (nearly) all the time flows is shown as ``first … last``."""
    lines: list[str] = []
    for name, child in sorted(node.children.items(), key=lambda item: -item[1].count):
        if child.count < floor * total:
            continue
        last, current = name, child
        while True:
            big = [(n, c) for n, c in current.children.items() if c.count >= floor * total]
            if len(big) != 1 or big[0][1].count < 0.97 * current.count:
                break
            last, current = big[0]
        label = name if last == name else f"{name.split(' (')[0]} … {last}"
        lines.append(f"{'  ' * indent}{100 * child.count / total:5.1f}%  {label}")
        lines += _tree_lines(current, total, floor, indent + 1)
    return lines


def print_profile(profile: Profile, top: int = 10, floor: float = 0.03) -> None:
    if profile.samples == 0:
        print(f"  [{profile.name}] no samples on CPU (see {profile.path})")
        return
    print(
        f"  [{profile.name}] {profile.samples} samples on CPU ({profile.idle} idle ones left out) in "
        f"{len(profile.threads) or 1} thread(s); % are of the samples on CPU"
    )

    def share(count: int) -> str:
        return f"{100 * count / profile.samples:5.1f}%"

    print("    self time by module/package:")
    for area, count in profile.by_area.most_common(top):
        print(f"      {share(count)}  {area}")
    print("    self time by function:")
    for function, count in profile.self_time.most_common(top):
        print(f"      {share(count)}  {function}")
    print(f"    call tree (function and callees), nodes of at least {100 * floor:.0f}%:")
    for line in _tree_lines(profile.tree, profile.samples, floor):
        print(f"      {line}")
    print(f"    raw stacks: {profile.path}")


class Profiler:
    """py-spy recording the server and the app during the throughput window."""

    def __init__(self, directory: Path, backend: str, targets: list[Process]) -> None:
        self._directory = directory
        self._backend = backend
        self._targets = targets
        self._recorders: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self._started = 0.0
        self.seconds = 0.0
        self.profiles: list[Profile] = []

    def start(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).parent / "py-spy"
        for target in self._targets:
            output = self._directory / f"{self._backend}-{target.name}.txt"
            argv = [str(py_spy), "record", "--pid", str(target.pid), "--rate", str(PROFILE_RATE)]
            argv += ["--threads", "--function", "--format", "raw", "--output", str(output)]
            log = (self._directory / f"{self._backend}-{target.name}.py-spy.log").open("wb")
            with log:
                recorder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            self._recorders.append((target.name, output, recorder))
        time.sleep(0.5)  # attached before the window opens
        self._started = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self._started
        for name, output, recorder in self._recorders:
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                recorder.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
            if output.exists():
                self.profiles.append(read_profile(name, output))
            else:
                print(f"  py-spy wrote no profile for {name}: see {output.with_suffix('.py-spy.log')}")
        self._recorders = []


# one backend


def start_server(db: Database, config: Config, tmp: Path) -> tuple[Process, str]:
    port = free_port()
    argv = [str(Path(sys.executable).parent / "stepline"), "dev", "--host", HOST, "--port", str(port)]
    argv += ["--database-url", db.url, "--concurrency", str(config.concurrency), "--pool-size", str(config.pool_size)]
    server = Process("server", argv, child_env(), tmp / f"{db.backend}-server.log")
    url = f"http://{HOST}:{port}"
    wait_ready(server, f"{url}/health")
    return server, url


def start_app(server_url: str, backend: str, tmp: Path) -> tuple[Process, str]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.http_app:asgi", "--host", HOST, "--port", str(port)]
    argv += ["--no-access-log", "--log-level", "warning"]
    app = Process("app", argv, child_env(STEPLINE_DEV="1", STEPLINE_BASE_URL=server_url), tmp / f"{backend}-app.log")
    url = f"http://{HOST}:{port}"
    wait_ready(app, f"{url}/bench/calls")
    return app, url


def sync_app(server_url: str, app_url: str) -> None:
    with httpx.Client(base_url=server_url, timeout=30.0, trust_env=False) as http:
        reply = http.post("/v1/apps/sync", json={"url": f"{app_url}{SERVE_PATH}"})
    if reply.status_code != 200 or not reply.json().get("ok"):
        raise BenchError(f"POST /v1/apps/sync answered {reply.status_code}: {reply.text[:300]}")


async def run_cases(
    result: BackendResult,
    server_url: str,
    app_url: str,
    db: Database,
    config: Config,
    pids: dict[str, int],
    profiler: Profiler | None,
) -> None:
    counter = db.counter()
    try:
        async with (
            httpx.AsyncClient(base_url=server_url, timeout=30.0, trust_env=False) as http,
            httpx.AsyncClient(base_url=app_url, timeout=30.0, trust_env=False) as app,
        ):
            if not config.skip_ingest:
                result.ingest = await measure_ingest(http, server_url, config, {"server": pids["server"]})
                print_ingest(result.ingest, config)
            result.throughput = await measure_throughput(http, app, counter, config, pids, profiler)
            print_throughput(result.throughput)
            if profiler is not None:
                for profile in profiler.profiles:
                    print_profile(profile)
            if config.skip_latency:
                return
            if result.throughput.timed_out:
                print("  latency     skipped: runs of the throughput case are still going, the server is not idle")
                return
            result.latency = await measure_latency(server_url, config)
            print_latency(result.latency)
    finally:
        counter.close()


def bench_backend(backend: str, factory: DatabaseFactory, config: Config) -> BackendResult:
    result = BackendResult(backend)
    with factory.fresh(backend) as db, contextlib.ExitStack() as stack:
        try:
            server, server_url = start_server(db, config, factory.tmp)
            stack.callback(server.stop)
            app, app_url = start_app(server_url, backend, factory.tmp)
            stack.callback(app.stop)
            sync_app(server_url, app_url)
            print(f"  server pid {server.pid} at {server_url}, app pid {app.pid} at {app_url}, database {db.url}")
            profiler = Profiler(config.profile_dir, backend, [server, app]) if config.profile_dir is not None else None
            pids = {"server": server.pid, "app": app.pid}
            asyncio.run(run_cases(result, server_url, app_url, db, config, pids, profiler))
        except Exception as exc:  # reported with the figures; the next backend still runs
            result.error = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {result.error}")
        finally:
            stack.close()  # stop both processes before reading their logs
            for process_name in ("server", "app"):
                log = factory.tmp / f"{backend}-{process_name}.log"
                if log.exists():
                    issues = [f"{process_name}: {line}" for line in _noteworthy_lines(log)]
                    result.log_issues += issues
    _print_issues(result.log_issues)
    return result


_NOTEWORTHY = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")


def _noteworthy_lines(path: Path) -> list[str]:
    """Lines of a process's log that report a warning, an error or a traceback."""
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if _NOTEWORTHY.search(line)]


# reporting


def _cpu_usage(cpu_s: dict[str, float], wall_s: float, count: int, unit: str) -> str:
    """``server 0.93 cores (1.52 ms/event), ...``: CPU used per process over a window."""
    if wall_s <= 0 or count <= 0:
        return ""
    return ", ".join(
        f"{name} {seconds / wall_s:.2f} cores ({1000 * seconds / count:.2f} ms/{unit})"
        for name, seconds in cpu_s.items()
    )


def print_ingest(result: IngestResult, config: Config) -> None:
    print(
        f"  ingest      batches of {config.batch}, 1 client: {result.batch_events} events in {result.batch_s:.2f} s = "
        f"{result.batch_eps:,.0f} events/s"
    )
    if usage := _cpu_usage(result.batch_cpu_s, result.batch_s, result.batch_events, "event"):
        print(f"              CPU: {usage}")
    print(
        f"              single events, {config.clients} clients: {result.single_events} events in "
        f"{result.single_s:.2f} s = {result.single_eps:,.0f} events/s "
        f"(request p50 {percentile(result.single_request_ms, 50):.1f} ms, "
        f"p99 {percentile(result.single_request_ms, 99):.1f} ms)"
    )
    if usage := _cpu_usage(result.single_cpu_s, result.single_s, result.single_events, "event"):
        print(f"              CPU: {usage}")
    for error in result.errors[:5]:
        print(f"    error: {error}")


def print_throughput(result: ThroughputResult) -> None:
    # Calls made for runs still going when the wait timed out would inflate calls per run.
    calls = f"{result.app_calls / result.runs:.2f}" if not result.timed_out else "?"
    print(
        f"  throughput  {result.finished} runs in {result.wall_s:.2f} s (send {result.send_s:.2f} s, "
        f"end seen after {result.detected_s:.2f} s): {result.runs_per_s:,.0f} runs/s, "
        f"{result.steps_per_s:,.0f} steps/s; {calls} app calls/run, at most {result.max_in_flight} at once"
        + ("  [PROFILED: not comparable]" if result.profiled else "")
    )
    if usage := _cpu_usage(result.cpu_s, result.detected_s, result.finished, "run"):
        print(f"    CPU used in the window: {usage}")
    total = result.runs + THROUGHPUT_WARMUP_RUNS
    if result.timed_out:
        print(f"    TIMED OUT: {result.finished}/{result.runs} runs terminal; statuses {result.statuses}")
    elif result.statuses.get("completed", 0) != total:
        print(f"    not every run completed: statuses {result.statuses}")
    elif result.steps_recorded != total * STEPS_PER_RUN:
        print(f"    steps recorded {result.steps_recorded}, expected {total * STEPS_PER_RUN}")
    if result.queue_left and not result.timed_out:
        print(f"    {result.queue_left} queue item(s) left after every run ended")
    for error in result.errors[:5]:
        print(f"    error: {error}")


def print_latency(result: LatencyResult) -> None:
    samples = result.samples_ms
    print(
        f"  latency     {len(samples)} samples: p50 {percentile(samples, 50):.2f} ms, "
        f"p99 {percentile(samples, 99):.2f} ms, max {percentile(samples, 100):.2f} ms "
        f"(server-side created->ended p50 {percentile(result.server_ms, 50):.0f} ms, "
        f"p99 {percentile(result.server_ms, 99):.0f} ms; {percentile([float(n) for n in result.polls], 50):.0f} "
        "GETs per sample, p50)"
    )
    for failure in result.failures[:5]:
        print(f"    failure: {failure}")


def _print_issues(issues: list[str]) -> None:
    if issues:
        print(f"  {len(issues)} warning/error line(s) in the server and app logs, first:")
        for line in issues[:5]:
            print(f"    {line[:300]}")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _row(result: BackendResult) -> list[str]:
    ingest, throughput, latency = result.ingest, result.throughput, result.latency
    cells = [result.backend]
    cells += [f"{ingest.batch_eps:,.0f}", f"{ingest.single_eps:,.0f}"] if ingest else ["-", "-"]
    if throughput:
        runs = str(throughput.finished) if not throughput.timed_out else f"{throughput.finished}/{throughput.runs}"
        cells += [runs, f"{throughput.wall_s:.2f}", f"{throughput.runs_per_s:,.0f}", f"{throughput.steps_per_s:,.0f}"]
    else:
        cells += ["-"] * 4
    if latency:
        ms = latency.samples_ms
        cells += [f"{percentile(ms, 50):.1f}", f"{percentile(ms, 99):.1f}", f"{percentile(ms, 100):.1f}"]
    else:
        cells += ["-"] * 3
    cells.append("ok" if result.ok else "FAIL")
    return cells


def print_summary(config: Config, results: list[BackendResult]) -> None:
    print()
    print(
        f"Summary (HTTP: stepline dev + FastAPI app; server concurrency {config.concurrency}, "
        f"pool_size {config.pool_size}; {STEPS_PER_RUN} steps/run)"
    )
    header = ["backend", "ingest ev/s", f"single ev/s ({config.clients}c)", "runs", "wall s", "runs/s", "steps/s"]
    header += ["lat p50 ms", "p99 ms", "max ms", "result"]
    if results:
        print(_table([header] + [_row(result) for result in results]))
    print(f"load average {support.load_average()}")


# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ingest, throughput and latency of a Stepline server over HTTP.")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, default=2000, help="runs in the throughput case (default 2000)")
    parser.add_argument("--batch", type=int, default=100, help="events per POST /e in batches (default 100)")
    parser.add_argument(
        "--ingest-events", type=int, default=5000, help="events sent in batches for the ingest figure (default 5000)"
    )
    parser.add_argument(
        "--single-events", type=int, default=1000, help="events sent one per POST for the ingest figure (default 1000)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients sending single events (default 8)")
    parser.add_argument("--latency-samples", type=int, default=200, help="timed latency samples (default 200)")
    parser.add_argument("--latency-warmup", type=int, default=20, help="untimed latency samples first (default 20)")
    parser.add_argument("--skip-ingest", action="store_true", help="leave out the ingest case")
    parser.add_argument("--skip-latency", action="store_true", help="leave out the latency case")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the throughput runs may take (120)")
    parser.add_argument("--concurrency", type=int, default=64, help="stepline dev --concurrency (default 64)")
    parser.add_argument("--pool-size", type=int, default=10, help="stepline dev --pool-size (default 10)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STEPLINE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL of the PostgreSQL server; the bench database is created next to it and dropped",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="py-spy the server and app during throughput"
    )
    args = parser.parse_args(argv)
    for name in ("runs", "batch", "ingest_events", "single_events", "clients", "latency_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch > 5000:
        parser.error("--batch must be at most 5000 (the server's limit per request)")
    return args


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the benchmark the way Ctrl-C does: through the ``finally`` blocks that stop the
    server and the app and drop the database (the default action would leave them behind)."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    config = Config(
        runs=args.runs,
        batch=args.batch,
        ingest_events=args.ingest_events,
        single_events=args.single_events,
        clients=args.clients,
        latency_samples=args.latency_samples,
        latency_warmup=args.latency_warmup,
        timeout_s=args.timeout,
        concurrency=args.concurrency,
        pool_size=args.pool_size,
        profile_dir=args.profile,
        skip_ingest=args.skip_ingest,
        skip_latency=args.skip_latency,
    )
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(
        f"Stepline HTTP bench: python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPU(s), load average {support.load_average()}"
    )
    print(
        f"config: runs={config.runs} batch={config.batch} ingest_events={config.ingest_events} "
        f"single_events={config.single_events} clients={config.clients} "
        f"latency_samples={config.latency_samples} (+{config.latency_warmup} warm-up) "
        f"server concurrency={config.concurrency} pool_size={config.pool_size}"
    )
    factory = DatabaseFactory(args.postgres_url)
    results: list[BackendResult] = []
    failed = False
    try:
        for backend in backends:
            if backend == "postgres" and (reason := factory.postgres_unavailable_reason()) is not None:
                print(f"\n[postgres] skipped: {reason}")
                failed = failed or args.backend == "postgres"
                continue
            print(f"\n[{backend}]")
            began = time.perf_counter()
            results.append(bench_backend(backend, factory, config))
            print(f"  ({backend} took {time.perf_counter() - began:.1f} s; load average now {support.load_average()})")
    finally:
        factory.cleanup()
    print_summary(config, results)
    failed = failed or not results or any(not result.ok for result in results)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: the server and the app were stopped, the bench database dropped", file=sys.stderr)
        sys.exit(130)
