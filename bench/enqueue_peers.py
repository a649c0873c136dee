"""The RoleReady enqueue route on Stepline and on peers, side by side, with ratios.

::

    .venv/bin/pip install -e '.[bench]'     # procrastinate, DBOS, Celery (from PyPI)
    .venv/bin/python bench/enqueue_peers.py [--calls 1000] [--warmup 200] [--rounds 1] [--only stepline-postgres,dbos]

Each case starts its own app process on a free port (and whatever it needs: a ``stepline dev``
server, a Celery worker) with fresh databases, seeds ``--users`` users with a job each into the
app's SQLite tables, and times ``POST /api/resumes/tailor`` one call at a time from a minimal
HTTP client (``bench.http.RawClient``), exactly as ``bench/enqueue.py``'s route case does, every
call followed (untimed) by a wait until its job ended, so that each call meets an idle system:

* **stepline-sqlite**, **stepline-postgres**: ``examples/roleready`` and ``stepline dev``;
  ``client.tasks.enqueue`` asks the server, which writes the task, its quota use, event and run
  in one transaction;
* **stepline-postgres-direct**: the same, the app writing the task itself in the server's
  database (``stepline.tasks.connect``), as procrastinate and DBOS write from the app;
* **procrastinate**, **dbos**, **celery**: the same route handing the work to the peer
  (``bench/peer_app.py``, which says what each peer writes; each does less than a tracked task).
  procrastinate and DBOS use PostgreSQL, Celery a Redis broker (``--redis-url``);
* **floor**: the same route INSERTing one row into a table of PostgreSQL and nothing else (no
  queue, nothing runs it; each call followed by 10 ms idle instead of a wait): what any durable
  enqueue on PostgreSQL costs at least on this machine. The distance of a case from it is what
  its queue adds.

With ``--rounds N`` the script goes through the cases N times, each time with ``--calls / N``
calls (and the warm-up) on fresh processes and databases, and pools each case's samples: the
speed of this machine drifts within minutes, and rounds spread the drift over every case alike.

Printed per case: p50 / p99 / max / mean in ms, and the ratio of each p50 and p99 to Stepline's
on PostgreSQL. A case whose peer is not installed or whose service is unreachable is skipped
with the reason. Figures move with the machine's load (printed before and after).
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import psycopg

import stepline
from bench import enqueue as bench_enqueue
from bench import http as bench_http
from bench import support

CASES = ("stepline-sqlite", "stepline-postgres", "stepline-postgres-direct", "procrastinate", "dbos", "celery", "floor")
PEER_MODULES = {"procrastinate": "procrastinate", "dbos": "dbos", "celery": "celery"}
POLL_S = 0.002
FLOOR_IDLE_S = 0.01
"""How long the floor case leaves the machine idle after each call, in place of a job to wait
for: about as long as the other cases' waits for their jobs, so that each call meets a machine
as idle as theirs do."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


Settle = Callable[[str], Awaitable[None]]


@asynccontextmanager
async def stepline_case(
    backend: str, direct: bool, args: argparse.Namespace, databases: bench_enqueue.Databases
) -> AsyncIterator[tuple[str, Path, Settle]]:
    name = "peers-server-direct" if direct else "peers-server"
    server_database = databases.fresh(backend, name)
    server, server_url = bench_enqueue.start_server(server_database, backend, databases.tmp, None)
    try:
        app, app_url = bench_enqueue.start_app(
            server_url, backend, databases.tmp, None, direct_database=server_database if direct else None
        )
        try:
            bench_http.sync_app(server_url, app_url)
            reader = stepline.Stepline(app_id="bench-peers", base_url=server_url, is_dev=True)
            settle = bench_enqueue.settler(reader, True)
            assert settle is not None
            yield app_url, bench_enqueue.app_database(databases.tmp, backend), settle
        finally:
            app.stop()
    finally:
        server.stop()


@asynccontextmanager
async def peer_case(
    peer: str, args: argparse.Namespace, databases: bench_enqueue.Databases
) -> AsyncIterator[tuple[str, Path, Settle]]:
    url = args.redis_url if peer == "celery" else databases.fresh("postgres", f"peer-{peer}")
    app_database = databases.tmp / f"peer-{peer}-roleready.db"
    env = bench_http.child_env(BENCH_PEER=peer, BENCH_PEER_URL=url, ROLEREADY_DATABASE=str(app_database))
    port = bench_http.free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.peer_app:app", "--host", bench_http.HOST, "--port", str(port)]
    argv += ["--no-access-log", "--log-level", "warning"]
    async with AsyncExitStack() as stack:
        if peer == "celery":
            worker = bench_http.Process(
                "celery worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.peer_celery",
                    "worker",
                    "--pool=solo",
                    "--loglevel=WARNING",
                ],
                env,
                databases.tmp / "celery-worker.log",
            )
            stack.callback(worker.stop)
        app = bench_http.Process(f"{peer} app", argv, env, databases.tmp / f"peer-{peer}.log")
        stack.callback(app.stop)
        app_url = f"http://{bench_http.HOST}:{port}"
        bench_http.wait_ready(app, f"{app_url}/")
        settle = await stack.enter_async_context(peer_settler(peer, url))
        yield app_url, app_database, settle


@asynccontextmanager
async def peer_settler(peer: str, url: str) -> AsyncIterator[Settle]:
    """Waits until the peer's job ended, reading the peer's own store as its clients would."""
    if peer == "floor":

        async def idle(_: str) -> None:
            await asyncio.sleep(FLOOR_IDLE_S)

        yield idle
        return
    if peer == "celery":
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(url)

        async def done(job_id: str) -> bool:
            meta = await client.get(f"celery-task-meta-{job_id}")
            return meta is not None and json.loads(meta)["status"] == "SUCCESS"

        try:
            yield _polling(done)
        finally:
            await client.aclose()
        return
    query = (
        "SELECT status = 'succeeded' FROM procrastinate_jobs WHERE id = %s::bigint"
        if peer == "procrastinate"
        else "SELECT status = 'SUCCESS' FROM dbos.workflow_status WHERE workflow_uuid = %s"
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

        async def finished(job_id: str) -> bool:
            row = await (await conn.execute(query, (job_id,))).fetchone()
            return bool(row and row[0])

        yield _polling(finished)


def _polling(done: Callable[[str], Awaitable[bool]]) -> Settle:
    async def settle(job_id: str) -> None:
        deadline = time.monotonic() + bench_enqueue.SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            if await done(job_id):
                return
            await asyncio.sleep(POLL_S)
        raise bench_http.BenchError(f"job {job_id} did not end within {bench_enqueue.SETTLE_TIMEOUT_S:g} s")

    return settle


async def time_route(app_url: str, app_database: Path, settle: Settle, args: argparse.Namespace) -> list[float]:
    users = bench_enqueue.seed_users(app_database, args.users)
    return await bench_enqueue.route_case(app_url, users, settle, args)


def unavailable(case: str, args: argparse.Namespace) -> str | None:
    module = PEER_MODULES.get(case)
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install -e '.[bench]')"
    if case == "celery":
        try:
            import redis

            redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
        except Exception as exc:
            return f"Redis at {args.redis_url} is unreachable: {exc}"
    if case != "stepline-sqlite" and case != "celery":
        return support.postgres_unavailable_reason(args.postgres_url)
    return None


async def run_case(case: str, args: argparse.Namespace, databases: bench_enqueue.Databases) -> list[float]:
    opened = (
        stepline_case(case.split("-")[1], case.endswith("-direct"), args, databases)
        if case.startswith("stepline-")
        else peer_case(case, args, databases)
    )
    async with opened as (app_url, app_database, settle):
        return await time_route(app_url, app_database, settle, args)


def report(found: dict[str, list[float]]) -> None:
    base = found.get("stepline-postgres")
    floor = found.get("floor")
    for case, samples in found.items():
        line = bench_enqueue.Figures(case, samples).line()
        if base is not None and case != "stepline-postgres":
            p50 = bench_http.percentile(samples, 50) / bench_http.percentile(base, 50)
            p99 = bench_http.percentile(samples, 99) / bench_http.percentile(base, 99)
            line += f"   vs stepline-postgres: p50 x{p50:.2f}, p99 x{p99:.2f}"
        if floor is not None and case != "floor":
            above = bench_http.percentile(samples, 50) - bench_http.percentile(floor, 50)
            line += f"   p50 {above:+.2f} ms over the floor"
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per case (default 1000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls first (default 200)")
    parser.add_argument("--users", type=int, default=bench_enqueue.DEFAULT_USERS)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="go through the cases this many times, --calls split between the rounds, so that a drift of "
        "the machine's speed reaches every case alike (default 1)",
    )
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases among {', '.join(CASES)}")
    parser.add_argument("--postgres-url", default=bench_enqueue.DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=os.environ.get("STEPLINE_BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args()
    cases = [case.strip() for case in args.only.split(",") if case.strip()]
    if unknown := sorted(set(cases) - set(CASES)):
        parser.error(f"unknown cases: {', '.join(unknown)}")
    if not 1 <= args.rounds <= args.calls:
        parser.error("--rounds must be from 1 to --calls")
    args.calls //= args.rounds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    found: dict[str, list[float]] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="stepline-bench-peers-") as tmp:
        databases = bench_enqueue.Databases(args.postgres_url, Path(tmp))
        try:
            left_out = {case: reason for case in cases if (reason := unavailable(case, args))}
            for case, reason in left_out.items():
                print(f"{case}: skipped ({reason})")
            for round_number in range(1, args.rounds + 1):
                for case in cases:
                    if case in left_out:
                        continue  # unavailable, or failed in an earlier round
                    load = support.load_average()
                    print(f"{case}: round {round_number} of {args.rounds}, load average {load}", flush=True)
                    try:
                        found.setdefault(case, []).extend(asyncio.run(run_case(case, args, databases)))
                    except bench_http.BenchError as exc:
                        print(f"{case}: failed: {exc}")
                        left_out[case] = "failed"
                        found.pop(case, None)
                        failed = True
        finally:
            databases.cleanup()
    print(f"done, load average {support.load_average()}")
    report(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
