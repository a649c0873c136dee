"""Enqueue latency of tracked tasks: the RoleReady route, and ``client.tasks.enqueue`` itself.

::

    .venv/bin/python bench/enqueue.py [--backend sqlite|postgres|both] [--calls 2000] [--warmup 200] [--rounds 1]

For each backend, with a fresh database, the script starts ``stepline dev`` and the example app
``examples/roleready`` (uvicorn, its own process, synced by the server) on free ports, then times,
one call at a time after ``--warmup`` untimed calls:

* **route**: ``POST /api/resumes/tailor`` through the app over HTTP: bearer auth, pydantic
  validation, the ownership check in the app's SQLite, then ``client.tasks.enqueue`` over HTTP to
  the server, which writes the quota use, the task, the event and the run in one transaction; the
  figure is the round trip the browser waits for. The browser is played by a minimal HTTP/1.1
  client on one keep-alive connection (``bench.http.RawClient``), so that the figure is the
  route's and not the load generator's: aiohttp measured the same route about 0.3 ms slower, and
  httpx 3 ms slower, time spent in those clients;
* **route, direct** (PostgreSQL only): the same route, the app started with ``STEPLINE_DATABASE_URL``
  set to the server's database, so that ``client.tasks`` writes the task itself
  (``stepline.tasks.connect``) and the server only runs it;
* **client → server**: ``client.tasks.enqueue`` from this process straight to the server
  (``POST /v1/tasks``, same quota, same event);
* **enqueue_in** (PostgreSQL only): ``stepline.tasks.enqueue_in`` inside a transaction of this
  process's own connection to the server's database, the production pattern of docs/tasks.md
  (no HTTP: the app writes the task itself; the server runs it);
* **embedded**: ``client.tasks.enqueue`` against a ``stepline.Engine`` running in this process on
  another fresh database (no HTTP at all).

The calls go round ``--users`` users (200): the route's callers are users seeded in the app's
database with a job each, and the other cases use as many owners. Each user's quota (a limit high
enough never to refuse) then counts the uses of one user, as in production, where a quota of 20 a
day bounds them; one user making every call would make each quota check count all the calls
before it. The tasks' runs execute meanwhile (the simulated model answers at once, never fails), as in
production, where enqueues compete with the work they start. Figures are nearest-rank
p50 / p99 / max in milliseconds. Target for the route on a 2-core machine: p50 < 3 ms, p99 < 10 ms
(exit status 1 when missed). The machine's load average is printed before and after each backend:
other work on the machine moves every figure.

``--profile DIR`` runs the app and the server under pyinstrument (``bench/enqueue_profiled.py``)
and writes ``DIR/app-<backend>.txt`` and ``DIR/server-<backend>.txt`` (and ``.html``): where their
time goes during the route and client cases (profiled figures are not comparable).

``--breakdown`` runs the app and the server through ``bench/enqueue_timed.py``, which times the
spans of each call inside them (what the app held the request, its enqueue call, what the server
held the request, the store's write, its statements), and prints the route and client cases cut
into parts: the wire and uvicorn, the app's own work, the hop to the server, the server's own
work, the store around its statements, the statements.
It costs two clock reads per span, so the figures stay comparable.

By default each timed call is followed (untimed) by a wait until its task ended, so every call
meets an idle system: the latency a user sees on a quiet server. ``--no-settle`` sends the calls
back to back while earlier tasks still run, which measures enqueues competing with the work.

``--split`` starts the server the app and the clients talk to with ``--no-execute`` and a
second server (a worker) on the same database that runs the tasks, as docs/server.md suggests
for production: the enqueues then no longer share a server's event loop with the calls to the
app. Compare with ``--no-settle``, where that sharing shows.

``--rounds N`` goes through the backends and their cases N times, each time with fresh databases,
new processes and ``--calls / N`` calls per case, then prints each case's figures pooled over the
rounds, and judges the target on those. The speed of this machine drifts within minutes (the same
route has measured 1.5x apart twenty minutes apart); cases run one after another for several
minutes meet different machines, and rounds spread the drift over every case alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/enqueue.py``, this file's directory is first on sys.path, where
# ``bench/http.py`` would shadow the standard library's ``http`` package: put the root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import collections
import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import psycopg

import stepline
import stepline.tasks as stepline_tasks
from bench import http as bench_http
from bench import support

ROUTE_P50_MS = 3.0
ROUTE_P99_MS = 10.0
QUOTA = stepline.Quota(feature="tailor_resume", limit=1_000_000_000, window=timedelta(days=1))
EVENT = "ai/tailor.resume"
DEFAULT_USERS = 200
SETTLE_TIMEOUT_S = 30.0
PROFILED = Path(__file__).with_name("enqueue_profiled.py")
TIMED = Path(__file__).with_name("enqueue_timed.py")
DEFAULT_POSTGRES_URL = os.environ.get("STEPLINE_BENCH_POSTGRES_URL", bench_http.DEFAULT_POSTGRES_URL)


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    case: str
    samples: list[float]
    """Milliseconds per call."""

    def line(self) -> str:
        p50, p99 = bench_http.percentile(self.samples, 50), bench_http.percentile(self.samples, 99)
        mean = sum(self.samples) / len(self.samples)
        return (
            f"  {self.case:<16} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {max(self.samples):7.2f} ms"
            f"   mean {mean:6.2f} ms   ({len(self.samples)} calls)"
        )


Settle = Callable[[str], Awaitable[None]] | None
"""Called with each task id after its timed call (untimed): waits until the task ended."""


async def timed(call: Callable[[], Awaitable[str]], calls: int, warmup: int, settle: Settle) -> list[float]:
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        task_id = await call()
        samples.append((time.perf_counter() - started) * 1000)
        if settle is not None:
            await settle(task_id)
    return samples


def settler(client: stepline.Stepline, enabled: bool) -> Settle:
    """With ``--settle``: poll the task every 2 ms until it ended, so that the next call meets an
    idle system; without, calls follow each other while earlier tasks' runs still execute."""
    if not enabled:
        return None

    async def settle(task_id: str) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            task = await client.tasks.get(task_id)
            if task is not None and task.is_terminal:
                if task.status != "complete":
                    raise bench_http.BenchError(f"task {task_id} ended {task.status}: {task.error}")
                return
            await asyncio.sleep(0.002)
        raise bench_http.BenchError(f"task {task_id} did not end within {SETTLE_TIMEOUT_S:g} s")

    return settle


def seed_users(app_database: Path, count: int) -> list[tuple[str, str]]:
    """Users of the app with a job each, written into its database (the app made the tables at
    start); returns (bearer token, job id) per user."""
    users = [(f"bench-user-{n}", f"bench-token-{n}", f"bench-job-{n}") for n in range(count)]
    with sqlite3.connect(app_database) as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO users (id, name, token) VALUES (?, ?, ?)",
            [(user, user, token) for user, token, _ in users],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO jobs (id, owner, title, company, keywords) VALUES (?, ?, 'Engineer', 'Bench', 'x')",
            [(job, user) for user, _, job in users],
        )
    return [(token, job) for _, token, job in users]


async def route_case(
    app_url: str, users: list[tuple[str, str]], settle: Settle, args: argparse.Namespace
) -> list[float]:
    """``POST /api/resumes/tailor`` one call at a time, going round ``users`` (bearer token, job id)."""
    http = bench_http.RawClient(app_url)
    turns = itertools.cycle(
        ({"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, json.dumps({"job_id": job}).encode())
        for token, job in users
    )

    async def call() -> str:
        headers, body = next(turns)
        reply = await http.request("POST", "/api/resumes/tailor", body, headers)
        if reply.status_code != 202:
            raise bench_http.BenchError(f"the route answered {reply.status_code}: {reply.text[:300]}")
        return str(reply.json()["aiJobId"])

    try:
        return await timed(call, args.calls, args.warmup, settle)
    finally:
        await http.close()


def enqueue_call(client: stepline.Stepline, owner: str, users: int) -> Callable[[], Awaitable[str]]:
    event = stepline.Event(name=EVENT, data={"job_id": "job-a1"})
    owners = itertools.cycle(f"{owner}-{n}" for n in range(users))

    async def call() -> str:
        return (await client.tasks.enqueue(kind="tailor_resume", owner=next(owners), event=event, quota=QUOTA)).id

    return call


async def client_case(server_url: str, args: argparse.Namespace) -> list[float]:
    client = stepline.Stepline(app_id="bench-enqueue", base_url=server_url, is_dev=True)
    call = enqueue_call(client, "bench-client", args.users)
    return await timed(call, args.calls, args.warmup, settler(client, args.settle))


async def enqueue_in_case(database_url: str, server_url: str, args: argparse.Namespace) -> list[float]:
    """``stepline.tasks.enqueue_in`` on this process's own connection to the server's database,
    in a transaction of the caller's (the production pattern of docs/tasks.md); the server runs
    the tasks as for the other cases."""
    reader = stepline.Stepline(app_id="bench-enqueue", base_url=server_url, is_dev=True)
    event = stepline.Event(name=EVENT, data={"job_id": "job-a1"})
    owners = itertools.cycle(f"bench-enqueue-in-{n}" for n in range(args.users))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:

        async def call() -> str:
            async with conn.transaction():
                task = await stepline_tasks.enqueue_in(
                    conn, kind="tailor_resume", owner=next(owners), event=event, quota=QUOTA
                )
            return task.id

        return await timed(call, args.calls, args.warmup, settler(reader, args.settle))


async def embedded_case(database_url: str, args: argparse.Namespace) -> list[float]:
    client = stepline.Stepline(app_id="bench-embedded")

    @client.function(id="tailor-resume", trigger=stepline.on_event(EVENT))
    async def tailor(ctx: stepline.Context) -> str:
        return await ctx.step.run("model", lambda: "tailored")

    async with stepline.Engine(client, functions=[tailor], database_url=database_url):
        call = enqueue_call(client, "bench-embedded", args.users)
        return await timed(call, args.calls, args.warmup, settler(client, args.settle))


def app_database(tmp: Path, backend: str) -> Path:
    return tmp / f"{backend}-roleready.db"


def start_app(
    server_url: str,
    backend: str,
    tmp: Path,
    profile: Path | None,
    direct_database: str | None = None,
    *,
    timed: bool = False,
) -> tuple[bench_http.Process, str]:
    """The example app; with ``direct_database``, it writes tasks straight there (``stepline.tasks.connect``)."""
    port = bench_http.free_port()
    uvicorn = ["-m", "uvicorn", "examples.roleready.app:app", "--host", bench_http.HOST, "--port", str(port)]
    uvicorn += ["--no-access-log", "--log-level", "warning"]
    if profile is not None:
        uvicorn = [str(PROFILED), "app", str(profile / f"app-{backend}.txt"), str(port)]
    elif timed:
        uvicorn = [str(TIMED), "app", str(port)]
    env = bench_http.child_env(
        STEPLINE_DEV="1",
        STEPLINE_BASE_URL=server_url,
        ROLEREADY_DATABASE=str(app_database(tmp, backend)),
        ROLEREADY_DAILY_LIMIT="1000000000",
        ROLEREADY_MODEL_LATENCY_MS="0",
        ROLEREADY_MODEL_FAILURE_RATE="0",
    )
    if direct_database is not None:
        env["STEPLINE_DATABASE_URL"] = direct_database
    name = "app" if direct_database is None else "app-direct"
    app = bench_http.Process(name, [sys.executable, *uvicorn], env, tmp / f"{backend}-{name}.log")
    url = f"http://{bench_http.HOST}:{port}"
    bench_http.wait_ready(app, f"{url}/")
    return app, url


def start_server(
    database_url: str,
    backend: str,
    tmp: Path,
    profile: Path | None,
    *,
    timed: bool = False,
    role: str = "server",
    extra: tuple[str, ...] = (),
) -> tuple[bench_http.Process, str]:
    port = bench_http.free_port()
    argv = ["-m", "stepline.cli", "dev", "--host", bench_http.HOST, "--port", str(port), "--database-url", database_url]
    argv += extra
    if profile is not None:
        argv = [str(PROFILED), "server", str(profile / f"server-{backend}.txt"), str(port), database_url]
    elif timed:
        argv = [str(TIMED), "server", str(port), database_url]
    server = bench_http.Process(role, [sys.executable, *argv], bench_http.child_env(), tmp / f"{backend}-{role}.log")
    url = f"http://{bench_http.HOST}:{port}"
    bench_http.wait_ready(server, f"{url}/health")
    return server, url


ROUTE_SPANS = (
    ("app: held the request", "the wire and uvicorn, browser to app"),
    ("app: enqueue call", "the app's own work (FastAPI, auth, ownership)"),
    ("server: held the request", "the hop to the server (SDK, aiohttp, wire, uvicorn)"),
    ("server: store.create_task", "the server's own work (lane, checks, plan)"),
    ("server: the statements", "the store around its statements (pool checkout; SQLite: lock, BEGIN, COMMIT)"),
)
"""For ``--breakdown``: the spans ``bench/enqueue_timed.py`` records, outermost first (each one
inside the one before), and what the time between a span and the next one inside it is spent on."""
CLIENT_SPANS = ROUTE_SPANS[2:]
"""The client calls the server itself: only the server's spans."""


def take_timings(url: str) -> dict[str, list[float]]:
    """The spans a process of ``bench/enqueue_timed.py`` recorded since the last ask (it forgets them)."""
    with httpx.Client(timeout=60, trust_env=False) as http:
        found: dict[str, list[float]] = http.get(f"{url}/bench/timings").json()
    return found


def breakdown(case: str, waited: list[float], spans: dict[str, list[float]], names: tuple[tuple[str, str], ...]) -> str:
    """The case's mean cut into parts: each part is the mean of a span minus the mean of the span
    inside it (means add up where percentiles do not), the last part the innermost span itself.
    Spans recorded during the warm-up calls are left out (the last ``len(waited)`` are kept)."""
    means = [sum(waited) / len(waited)]
    for name, _ in names:
        samples = spans.get(name, [])[-len(waited) :]
        if len(samples) != len(waited):
            return f"  {case}: breakdown unavailable ({name}: {len(samples)} samples for {len(waited)} calls)"
        means.append(sum(samples) / len(samples))
    labels = [label for _, label in names] + ["the statements (PostgreSQL: round trip, function, commit)"]
    parts = [outer - inner for outer, inner in itertools.pairwise(means)] + [means[-1]]
    cut = "; ".join(f"{label} {part:.2f}" for label, part in zip(labels, parts, strict=True))
    return f"  {case}, mean {means[0]:.2f} ms in parts: {cut}"


def write_profile(url: str) -> None:
    with httpx.Client(timeout=60, trust_env=False) as http:
        print(f"  profile: {http.post(f'{url}/bench/profile').text}")


class Databases:
    """Fresh databases: SQLite files under ``tmp``, or PostgreSQL databases dropped by ``cleanup``."""

    def __init__(self, admin_url: str, tmp: Path) -> None:
        self.admin_url = admin_url
        self.tmp = tmp
        self.created: list[str] = []
        self._asked: collections.Counter[str] = collections.Counter()

    def fresh(self, backend: str, name: str) -> str:
        """A new database each call, even for a name asked for before (cases run in rounds)."""
        self._asked[name] += 1
        if self._asked[name] > 1:
            name = f"{name}_{self._asked[name]}"
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / name}.db"
        database = f"stepline_bench_enqueue_{os.getpid()}_{name}"
        self.created.append(database)
        return support.create_database(self.admin_url, database)

    def cleanup(self) -> None:
        for database in self.created:
            support.drop_database(self.admin_url, database)


async def bench_backend(backend: str, args: argparse.Namespace, databases: Databases) -> list[Figures]:
    print(f"{backend}: load average {support.load_average()}")
    server_database = databases.fresh(backend, "server")
    front = ("--no-execute",) if args.split else ()
    server, server_url = start_server(
        server_database, backend, databases.tmp, args.profile, timed=args.breakdown, extra=front
    )
    # With --split the server above only serves; this one, on the same database, runs the tasks.
    worker = start_server(server_database, backend, databases.tmp, None, role="worker")[0] if args.split else None
    app: bench_http.Process | None = None
    parts: list[str] = []
    try:
        app, app_url = start_app(server_url, backend, databases.tmp, args.profile, timed=args.breakdown)
        bench_http.sync_app(server_url, app_url)
        users = seed_users(app_database(databases.tmp, backend), args.users)
        reader = stepline.Stepline(app_id="bench-enqueue", base_url=server_url, is_dev=True)
        found = [Figures("route", await route_case(app_url, users, settler(reader, args.settle), args))]
        if args.breakdown:
            spans = take_timings(app_url) | take_timings(server_url)
            parts.append(breakdown("route", found[-1].samples, spans, ROUTE_SPANS))
        found.append(Figures("client → server", await client_case(server_url, args)))
        if args.breakdown:
            parts.append(breakdown("client → server", found[-1].samples, take_timings(server_url), CLIENT_SPANS))
        if backend == "postgres":
            found.append(Figures("enqueue_in", await enqueue_in_case(server_database, server_url, args)))
            app.stop()
            app, app_url = start_app(server_url, backend, databases.tmp, args.profile, direct_database=server_database)
            bench_http.sync_app(server_url, app_url)
            direct = await route_case(app_url, users, settler(reader, args.settle), args)
            found.insert(1, Figures("route, direct", direct))
    finally:
        if app is not None:
            if args.profile is not None:
                write_profile(app_url)
            app.stop()
        if args.profile is not None:
            write_profile(server_url)
        server.stop()
        if worker is not None:
            worker.stop()
    embedded_url = databases.fresh(backend, "embedded")
    found.append(Figures("embedded", await embedded_case(embedded_url, args)))
    for figures in found:
        print(figures.line())
    for line in parts:
        print(line)
    print(f"{backend}: done, load average {support.load_average()}")
    return found


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per case (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls first (default 200)")
    parser.add_argument(
        "--users", type=int, default=DEFAULT_USERS, help=f"users (owners) the calls go round (default {DEFAULT_USERS})"
    )
    parser.add_argument(
        "--settle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait (untimed) for each task to end before the next call (default); --no-settle: back to back",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="go through the backends and cases this many times, --calls split between the rounds, so that "
        "a drift of this machine's speed reaches every case alike; figures are pooled (default 1)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="the app and the clients talk to a server started with --no-execute, and a second server on the "
        "same database runs the tasks (docs/server.md: API servers and workers)",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--profile", type=Path, default=None, help="write a pyinstrument profile of the app here")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="time the spans of each call inside the app and the server, and print the route and client cases "
        "cut into parts (bench/enqueue_timed.py)",
    )
    args = parser.parse_args()
    if args.split and (args.profile is not None or args.breakdown):
        parser.error("--split starts the servers plainly: it does not combine with --profile or --breakdown")
    if args.profile is not None and args.breakdown:
        parser.error("--profile and --breakdown measure differently: choose one")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if not 1 <= args.rounds <= args.calls:
        parser.error("--rounds must be from 1 to --calls")
    args.calls //= args.rounds
    return args


def main() -> int:
    args = parse_arguments()
    # SIGTERM unwinds like Ctrl-C, so that the processes and the databases are still removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    missed = False
    pooled: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="stepline-bench-enqueue-") as tmp:
        databases = Databases(args.postgres_url, Path(tmp))
        try:
            for backend in list(backends):
                if backend == "postgres" and (reason := support.postgres_unavailable_reason(args.postgres_url)):
                    print(f"postgres: skipped ({reason})")
                    missed = missed or args.backend == "postgres"
                    backends.remove(backend)
            for round_number in range(1, args.rounds + 1):
                for backend in backends:
                    if args.rounds > 1:
                        print(f"{backend}: round {round_number} of {args.rounds}")
                    for figures in asyncio.run(bench_backend(backend, args, databases)):
                        pooled.setdefault(backend, {}).setdefault(figures.case, []).extend(figures.samples)
        finally:
            databases.cleanup()
    for backend, cases in pooled.items():
        if args.rounds > 1:
            print(f"{backend}: {args.rounds} rounds pooled")
            for case, samples in cases.items():
                print(Figures(case, samples).line())
        route = cases["route"]
        p50, p99 = bench_http.percentile(route, 50), bench_http.percentile(route, 99)
        verdict = "met" if p50 < ROUTE_P50_MS and p99 < ROUTE_P99_MS else "MISSED"
        print(f"{backend}: route target p50 < {ROUTE_P50_MS:g} ms, p99 < {ROUTE_P99_MS:g} ms: {verdict}")
        missed = missed or verdict == "MISSED"
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
