"""PostgreSQL plans of the read API's list queries, over a database of synthetic runs.

::

    .venv/bin/python bench/query_plans.py [--runs 100000] [--postgres-url URL] [--keep] > plans.md

Creates a database (``stepline_plans_<pid>``) on the server of ``--postgres-url``, migrates it,
fills it with ``--runs`` runs spread over 30 days (20 functions, plus one retired function
with every other run of the oldest third; mostly completed), each started by its own event
(10 event names; one event in 50 reuses an earlier public id), runs ``ANALYZE``, then prints
as Markdown ``EXPLAIN (ANALYZE, BUFFERS)`` of every list query of
``stepline/storage/postgres/queries.sql`` with typical values, planned for those values as the
store runs them (unprepared). It exits with status 1 if a plan does not read the index the
query is meant for, reads ``runs`` or ``events`` sequentially, or sorts (apart from the few
runs of one event). The database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import ulid
from psycopg import sql

from stepline.storage import open_store, queries, records

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY_MS = 86_400_000
FUNCTIONS = [f"shop-fn-{index:02d}" for index in range(20)]
RETIRED = "shop-fn-retired"
EVENT_NAMES = [f"shop/event.{index}" for index in range(10)]
STATUSES = [("completed", 0.85), ("failed", 0.08), ("running", 0.04), ("queued", 0.02), ("cancelled", 0.01)]
PAGE = 51  # the API asks for one more row than a page holds (50 by default)


@dataclass(frozen=True)
class Case:
    title: str
    query: str
    params: dict[str, Any]
    index: str
    """The index the plan must read."""


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def _ulid_at(millis: int, rng: random.Random) -> str:
    return str(ulid.ULID.from_bytes(millis.to_bytes(6, "big") + rng.randbytes(10)))


def fill(conn: psycopg.Connection[Any], runs: int, now: int, rng: random.Random) -> dict[str, Any]:
    """Insert ``runs`` runs and their events; returns ids worth querying for."""
    statuses, weights = zip(*STATUSES, strict=True)
    run_ids: list[str] = []
    event_ids: list[str] = []
    public_ids: list[str] = []
    times = [now - 30 * DAY_MS + (30 * DAY_MS * index) // runs for index in range(runs)]
    with conn.cursor() as cursor:
        with cursor.copy("COPY events (internal_id, id, name, data, user_data, ts, received_at) FROM STDIN") as copy:
            for index, created in enumerate(times):
                internal_id = _ulid_at(created, rng)
                public_id = rng.choice(public_ids) if public_ids and index % 50 == 0 else internal_id
                public_ids.append(public_id)
                event_ids.append(internal_id)
                data = f'{{"n": {index}}}'
                copy.write_row((internal_id, public_id, EVENT_NAMES[index % 10], data, "{}", created, created))
        columns = "id, function_id, event_id, events, status, created_at, started_at, ended_at, step_count"
        with cursor.copy(f"COPY runs ({columns}) FROM STDIN") as copy:
            for index, (event_id, created) in enumerate(zip(event_ids, times, strict=True)):
                run_id = _ulid_at(created + rng.randint(0, 3), rng)
                run_ids.append(run_id)
                status = rng.choices(statuses, weights)[0]
                ended = created + 500 if status in ("completed", "failed", "cancelled") else None
                started = None if status == "queued" else created + 5
                events = f'[{{"name": "{EVENT_NAMES[index % 10]}", "data": {{}}}}]'
                retired = index < runs // 3 and index % 2 == 0
                function_id = RETIRED if retired else FUNCTIONS[rng.randrange(len(FUNCTIONS))]
                copy.write_row((run_id, function_id, event_id, events, status, created, started, ended, 3))
    conn.execute("ANALYZE runs")
    conn.execute("ANALYZE events")
    duplicated = next(public for public, internal in zip(public_ids, event_ids, strict=True) if public != internal)
    return {"run_ids": sorted(run_ids), "event_ids": event_ids, "duplicated_public_id": duplicated}


def _all_runs() -> dict[str, Any]:
    every = records.IdRange.page(None)
    return {"function_id": None, "status": None, "event_id": None, "lower": "", "upper": every.upper, "limit": PAGE}


def cases(found: dict[str, Any], now: int) -> list[Case]:
    run_ids: list[str] = found["run_ids"]
    event_ids: list[str] = found["event_ids"]
    middle = run_ids[len(run_ids) // 2]
    near_oldest = run_ids[PAGE * 2]
    every = records.IdRange.page(None)
    week = records.IdRange.page(None, now - 14 * DAY_MS, now - 7 * DAY_MS)
    runs = _all_runs()
    in_week = {**runs, "lower": week.lower, "upper": week.upper}
    one_event = event_ids[len(event_ids) // 3]
    events = {"name": None, "upper": every.upper, "limit": PAGE}
    return [
        Case("All runs, first page", "list_runs", runs, "runs_pkey"),
        Case("All runs, a page in the middle (cursor)", "list_runs", {**runs, "upper": middle}, "runs_pkey"),
        Case("All runs, near the oldest (cursor)", "list_runs", {**runs, "upper": near_oldest}, "runs_pkey"),
        Case("All runs created in a one-week window (after, before)", "list_runs", in_week, "runs_pkey"),
        Case(
            "Runs of one function", "list_runs_by_function", {**runs, "function_id": FUNCTIONS[3]}, "runs_by_function"
        ),
        Case(
            "Runs of a function with no run in the last 20 days",
            "list_runs_by_function",
            {**runs, "function_id": RETIRED},
            "runs_by_function",
        ),
        Case(
            "Runs of one function in a one-week window",
            "list_runs_by_function",
            {**in_week, "function_id": FUNCTIONS[3]},
            "runs_by_function",
        ),
        Case("Runs in one status (failed)", "list_runs_by_status", {**runs, "status": "failed"}, "runs_by_status"),
        Case(
            "Runs in a rare status (cancelled), a page in the middle",
            "list_runs_by_status",
            {**runs, "status": "cancelled", "upper": middle},
            "runs_by_status",
        ),
        Case(
            "Runs of one function in one status (failed)",
            "list_runs_by_function_status",
            {**runs, "function_id": FUNCTIONS[3], "status": "failed"},
            "runs_by_function_status",
        ),
        Case(
            "Runs of one function in a rare status (cancelled) in a one-week window",
            "list_runs_by_function_status",
            {**in_week, "function_id": FUNCTIONS[3], "status": "cancelled"},
            "runs_by_function_status",
        ),
        Case("Runs started by one event", "list_runs_by_event", {**runs, "event_id": one_event}, "runs_by_event"),
        Case(
            "Runs started by one event, with function and status filters",
            "list_runs_by_event",
            {**runs, "event_id": one_event, "function_id": FUNCTIONS[3], "status": "completed"},
            "runs_by_event",
        ),
        Case("All events, first page", "list_events", events, "events_pkey"),
        Case(
            "All events, a page in the middle (cursor)",
            "list_events",
            {**events, "upper": event_ids[len(event_ids) // 2]},
            "events_pkey",
        ),
        Case("Events with one name", "list_events_by_name", {**events, "name": EVENT_NAMES[2]}, "events_by_name"),
        Case(
            "Events by public id (GET /v1/events/{id})",
            "events_by_public_id",
            {"id": found["duplicated_public_id"], "limit": 21},
            "events_by_public_id",
        ),
    ]


def problems_of(case: Case, plan: str) -> list[str]:
    problems = []
    if f" using {case.index} on " not in plan:
        problems.append(f"{case.title}: does not read {case.index}")
    if re.search(r"Seq Scan on (runs|events)", plan):
        problems.append(f"{case.title}: reads the table sequentially")
    if "Sort" in plan and case.index != "runs_by_event":
        problems.append(f"{case.title}: sorts")
    return problems


def report(url: str, runs: int) -> int:
    async def migrate() -> None:
        await (await open_store(url)).close()

    asyncio.run(migrate())
    now = int(time.time() * 1000)
    named = queries.load_queries("postgres")
    problems: list[str] = []
    # prepare_threshold=None: every statement is planned for its values, as the store runs these.
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        started = time.monotonic()
        found = fill(conn, runs, now, random.Random(7))
        row = conn.execute("SHOW server_version").fetchone()
        version = row[0] if row else "?"
        print(f"<!-- {runs} runs and events inserted in {time.monotonic() - started:.1f}s; PostgreSQL {version} -->")
        for case in cases(found, now):
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {named[case.query]}", case.params).fetchall()
            plan = "\n".join(str(line[0]) for line in rows)
            problems += problems_of(case, plan)
            print(f"\n### {case.title}\n\n`{case.query}`\n\n```\n{plan}\n```")
        # What the row comparisons avoid: the same filter written plainly, for comparison.
        plain = named["list_runs"].replace("WHERE ", "WHERE function_id = %(function_id)s AND ", 1)
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {plain}", {**_all_runs(), "function_id": RETIRED}).fetchall()
        plan = "\n".join(str(line[0]) for line in rows)
        print("\n### For comparison: the retired function's runs with `function_id = ... ORDER BY id DESC`\n")
        print(f"```\n{plan}\n```")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="runs (and events) to insert")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STEPLINE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a server where the script may create a database",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    name = f"stepline_plans_{os.getpid()}"
    with psycopg.connect(args.postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        return report(_with_database(args.postgres_url, name), args.runs)
    finally:
        if not args.keep:
            with psycopg.connect(args.postgres_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    sys.exit(main())
