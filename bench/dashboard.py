"""Time to render the dashboard's pages with a million runs in PostgreSQL.

::

    .venv/bin/python bench/dashboard.py [--runs 1000000] [--repeat 30] [--postgres-url URL] [--keep]

Creates a database (``stepline_dashboard_<pid>``), migrates it, fills it as
``bench/query_plans.py`` does (``--runs`` runs and events over 30 days, COPY), adds three
recorded steps to each of the newest 20,000 runs, then renders each page through the server's
ASGI app in process (the real app: store, queries, templates; no network) ``--repeat`` times and
prints the median and 95th percentile per page, with the ``EXPLAIN ANALYZE`` of the overview's
queries. The database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from typing import Any

import httpx
import psycopg

from bench import query_plans, support
from stepline.server import app as app_
from stepline.server import settings as settings_
from stepline.storage import open_store, queries, records

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STEPPED_RUNS = 20_000


def add_steps(conn: psycopg.Connection[Any], run_ids: list[str]) -> None:
    """Three recorded ``step.run`` results for each run of ``run_ids`` (the newest ones)."""
    rows = conn.execute("SELECT id, created_at FROM runs WHERE id = ANY(%s)", (run_ids,)).fetchall()
    with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY steps (run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at) FROM STDIN"
        ) as copy,
    ):
        for run_id, created in rows:
            for seq in range(3):
                start = created + 5 + seq * 150
                copy.write_row(
                    (run_id, f"{seq:040d}", f"step-{seq}", "run", '{"data": {"ok": true}}', seq, 1, start, start + 120)
                )
    conn.execute("ANALYZE steps")


def add_functions(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cursor:
        for function_id in [*query_plans.FUNCTIONS, query_plans.RETIRED]:
            config = json.dumps({"id": function_id, "triggers": [{"event": "shop/event.1"}]})
            cursor.execute(
                "INSERT INTO functions (id, app_id, name, config, updated_at) VALUES (%s, 'shop', %s, %s, 0)",
                (function_id, function_id, config),
            )


async def time_pages(url: str, found: dict[str, Any], repeat: int) -> list[tuple[str, list[float]]]:
    app = app_.create_app(settings_.ServerSettings(dev=True, database_url=url))
    run_ids: list[str] = found["run_ids"]
    newest, middle = run_ids[-1], run_ids[len(run_ids) // 2]
    pages = [
        ("runs list, first page", "/runs"),
        ("runs list, a page in the middle (cursor)", f"/runs?cursor={middle}"),
        ("runs list, one function", f"/runs?function={query_plans.FUNCTIONS[3]}"),
        ("runs list, failed runs of one function", f"/runs?function={query_plans.FUNCTIONS[3]}&status=failed"),
        ("run page (3 steps)", f"/runs/{newest}"),
        ("run page of an old run (no steps)", f"/runs/{run_ids[10]}"),
        ("events list", "/events"),
        ("function page (recent outcomes)", f"/functions/{query_plans.FUNCTIONS[3]}"),
        ("overview (last hour)", "/"),
    ]
    timings: list[tuple[str, list[float]]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for title, path in pages:
                reply = await client.get(path)  # warm: plans, templates, connections
                if reply.status_code != 200:
                    raise SystemExit(f"{path} answered {reply.status_code}: {reply.text[:300]}")
                samples = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    reply = await client.get(path)
                    samples.append((time.perf_counter() - started) * 1000)
                    assert reply.status_code == 200
                timings.append((f"{title}  `{path.split('?')[0]}`", samples))
    return timings


def overview_plans(url: str, now: int) -> str:
    named = queries.load_queries("postgres")
    since = now - 3_600_000
    cases: list[tuple[str, dict[str, Any]]] = [
        ("runs_started_per_minute", {"lower": records.IdRange.floor(since)}),
        ("runs_ended_per_minute", {"since": since}),
        ("step_timings_since", {"since": since, "limit": 20_000}),
        ("ready_queue", {"now": now}),
    ]
    out = []
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for name, params in cases:
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + named[name], params).fetchall()
            plan = "\n".join(str(row[0]) for row in rows)
            out.append(f"### `{name}`\n\n```\n{plan}\n```\n")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres-url", default=os.environ.get("STEPLINE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    reason = support.postgres_unavailable_reason(args.postgres_url)
    if reason:
        print(reason, file=sys.stderr)
        return 1
    name = f"stepline_dashboard_{os.getpid()}"
    url = support.create_database(args.postgres_url, name)
    try:
        asyncio.run(_migrate(url))
        now = int(time.time() * 1000)
        started = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            found = query_plans.fill(conn, args.runs, now, random.Random(7))
            add_steps(conn, found["run_ids"][-STEPPED_RUNS:])
            add_functions(conn)
        print(f"# Dashboard render times, {args.runs:,} runs in PostgreSQL")
        took = time.monotonic() - started
        print(f"\n{args.runs:,} runs and events and {3 * STEPPED_RUNS:,} steps inserted in {took:.0f} s;")
        print(
            f"load average {support.load_average()}; {args.repeat} renders per page, through the ASGI app in process.\n"
        )
        print("| page | median ms | p95 ms |\n|---|---|---|")
        for title, samples in asyncio.run(time_pages(url, found, args.repeat)):
            ordered = sorted(samples)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            print(f"| {title} | {statistics.median(samples):.1f} | {p95:.1f} |")
        print("\n## Plans of the overview's queries\n")
        print(overview_plans(url, int(time.time() * 1000)))
    finally:
        if not args.keep:
            support.drop_database(args.postgres_url, name)
    return 0


async def _migrate(url: str) -> None:
    await (await open_store(url)).close()


if __name__ == "__main__":
    sys.exit(main())
