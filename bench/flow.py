"""Flow-control benchmark: claiming under concurrency limits, on SQLite and PostgreSQL.

::

    .venv/bin/python bench/flow.py [--backend sqlite|postgres|both] [--runs 100000] [--keys 1000]

For each backend, in a fresh database (a temporary SQLite file; a new PostgreSQL database on the
server of ``--postgres-url``, dropped at the end), straight on the ``Store`` API, the way the
executor uses it (claim a batch with a lease, then complete each item in its own transaction,
which frees its slot and unparks the key's next item):

* **keys**: ``--runs`` queued runs spread over ``--keys`` concurrency keys (limit ``--limit``
  each), all ready at once. ``--workers`` claimers each claim ``--batch`` items at a time and
  complete them, until ``--claims`` items were processed. Prints items claimed per second and
  the p50/p99/max latency of one ``claim`` call.
* **hot key**: ``--runs`` queued runs behind a single key (limit ``--limit``), older than
  everything else, plus ``--others`` runs of a function without limits. The same claimers
  process the other function's runs; the latency of their claims is compared with the same
  work on an empty queue (**baseline**): a busy key's backlog is parked once and not scanned
  again, so the two should match. On PostgreSQL the second half is timed after ``VACUUM queue``
  (what autovacuum soon does), since parking leaves dead ``queue_ready`` entries behind.

``--explain`` also prints the plans of the flow-control queries on the loaded queue (the
figures and plans in ``docs/internals/flow-control.md`` come from here).
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import dataclasses
import json
import math
import os
import sqlite3
import tempfile
import time
from typing import Any

import psycopg

from bench import support
from stepline.storage import open_store, queries, records, store

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LEASE_MS = 60_000
LOAD_BATCH = 2_000


@dataclasses.dataclass
class Config:
    runs: int
    keys: int
    limit: int
    workers: int
    batch: int
    claims: int
    others: int
    explain: bool


@dataclasses.dataclass
class Result:
    backend: str
    case: str
    items: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


async def load(db: store.Store, count: int, key_of: Any, limit: int, *, at: int, prefix: str) -> None:
    """``count`` queued runs with one discover item each, ready at ``at + n``; ``key_of(n)`` is the
    run's concurrency key, or None for a run without limits."""
    for start in range(0, count, LOAD_BATCH):
        numbers = range(start, min(count, start + LOAD_BATCH))
        runs = [
            records.RunRecord(
                id=f"{prefix}{n:09d}",
                function_id=f"bench-{prefix}",
                event_id=f"ev-{prefix}{n:09d}",
                events=[{"name": "bench/flow", "data": {"n": n}}],
                status=records.RunStatus.QUEUED,
                created_at=at + n,
            )
            for n in numbers
        ]
        keys = [records.RunConcurrency(run.id, key_of(n), limit) for run, n in zip(runs, numbers, strict=True)]
        items = [
            records.QueueItem(
                id=f"q{prefix}{n:09d}",
                run_id=run.id,
                kind=records.ItemKind.DISCOVER,
                available_at=at + n,
                created_at=at + n,
            )
            for run, n in zip(runs, numbers, strict=True)
        ]
        async with db.transaction() as tx:
            await tx.insert_runs(runs)
            await tx.insert_run_concurrency([row for row in keys if row.key1 is not None])
            await tx.enqueue_many(items)


async def drive(
    db: store.Store, config: Config, target: int, now: int, accept: Any = None
) -> tuple[int, float, list[float]]:
    """Claim and complete items with ``config.workers`` claimers until ``target`` were processed
    (or nothing is claimable); returns (items, seconds, claim latencies in ms)."""
    processed = 0
    latencies: list[float] = []
    done = asyncio.Event()

    async def worker() -> None:
        nonlocal processed
        idle = 0
        while not done.is_set():
            started = time.perf_counter()
            items = await db.claim(now, config.batch, now + LEASE_MS)
            latencies.append((time.perf_counter() - started) * 1000)
            if not items:
                idle += 1
                if idle > 50:
                    return
                await asyncio.sleep(0.001)
                continue
            idle = 0
            for item in items:
                async with db.transaction() as tx:
                    await tx.complete_item(item.id, item.claims)
            processed += len(items)
            if processed >= target:
                done.set()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(config.workers)))
    return processed, time.perf_counter() - started, latencies


async def open_fresh(backend: str, admin_url: str, tmp: Path, name: str) -> tuple[store.Store, str]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / (name + '.db')}"
    else:
        url = support.create_database(admin_url, f"stepline_benchflow_{os.getpid()}_{name}")
    return await open_store(url), url


async def case_keys(backend: str, config: Config, admin_url: str, tmp: Path) -> Result:
    db, url = await open_fresh(backend, admin_url, tmp, "keys")
    try:
        t0 = time.perf_counter()
        await load(db, config.runs, lambda n: f"bench-key-{n % config.keys}", config.limit, at=1_000, prefix="k")
        print(f"  loaded {config.runs:,} runs over {config.keys:,} keys in {time.perf_counter() - t0:.1f} s")
        now = 10_000_000
        if config.explain:
            await explain(backend, url, now, "bench-key-7")
        items, seconds, latencies = await drive(db, config, config.claims, now)
        return Result(backend, f"{config.keys} keys", items, seconds, latencies)
    finally:
        await db.close()


async def case_hot_key(backend: str, config: Config, admin_url: str, tmp: Path) -> tuple[Result, Result, Result]:
    baseline_db, _ = await open_fresh(backend, admin_url, tmp, "baseline")
    try:
        await load(baseline_db, config.others, lambda n: None, config.limit, at=500_000, prefix="o")
        items, seconds, latencies = await drive(baseline_db, config, config.others, 10_000_000)
        baseline = Result(backend, "baseline", items, seconds, latencies)
    finally:
        await baseline_db.close()
    db, url = await open_fresh(backend, admin_url, tmp, "hot")
    try:
        t0 = time.perf_counter()
        await load(db, config.runs, lambda n: "bench-hot", config.limit, at=1_000, prefix="h")
        await load(db, config.others, lambda n: None, config.limit, at=500_000, prefix="o")
        took = time.perf_counter() - t0
        print(f"  loaded {config.runs:,} runs behind one key + {config.others:,} unlimited in {took:.1f} s")
        # The first claims park the hot key's backlog (once): claim until the other function's
        # runs come through, then time the steady state.
        t1 = time.perf_counter()
        warmed = 0
        slowest = 0.0
        claims = 0
        while True:
            t2 = time.perf_counter()
            batch = await db.claim(10_000_000, config.batch, 10_000_000 + LEASE_MS)
            slowest = max(slowest, time.perf_counter() - t2)
            claims += 1
            for item in batch:
                async with db.transaction() as tx:
                    await tx.complete_item(item.id, item.claims)
            warmed += sum(1 for item in batch if item.run_id.startswith("o"))
            if warmed or not batch:
                break
        print(
            f"  parking the backlog: {time.perf_counter() - t1:.1f} s over {claims} claims "
            f"(slowest claim {slowest * 1000:,.0f} ms)"
        )
        half = (config.others - warmed) // 2
        items, seconds, latencies = await drive(db, config, half, 10_000_000)
        hot = Result(backend, "hot key", items, seconds, latencies)
        if config.explain:
            await explain(backend, url, 10_000_000, "bench-hot")
        if backend == "postgres":
            # Parking moved the backlog's rows out of queue_ready's range, leaving dead index
            # entries that claims walk past until (auto)vacuum removes them: time it both ways.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM queue")
        items, seconds, latencies = await drive(db, config, config.others - warmed - items, 10_000_000)
        vacuumed = Result(
            backend, "hot, vacuumed" if backend == "postgres" else "hot key (2)", items, seconds, latencies
        )
        return baseline, hot, vacuumed
    finally:
        await db.close()


EXPLAINED = ("claim_items", "count_slots", "unpark_items")


async def explain(backend: str, url: str, now: int, key: str) -> None:
    """Plans of the flow-control queries with realistic parameters (read-only: in a rolled-back
    transaction on PostgreSQL; EXPLAIN QUERY PLAN on SQLite)."""
    sql = queries.load_queries(backend)
    params: dict[str, dict[str, Any]] = {
        "claim_items": {"now": now, "limit": 10, "lease_until": now + LEASE_MS},
        "count_slots": {"keys": [key], "now": now},
        "unpark_items": {"key": key, "limit": 1},
    }
    print(f"\n  plans ({backend}):")
    if backend == "postgres":
        with psycopg.connect(url) as conn:
            conn.execute("ANALYZE queue")
            for name in EXPLAINED:
                rows = conn.execute(
                    f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) {sql[name]}", params[name]
                ).fetchall()
                conn.rollback()
                print(f"  -- {name}")
                for (line,) in rows:
                    print(f"     {line}")
        return
    lite = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        for name in EXPLAINED:
            values = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in params[name].items()}
            print(f"  -- {name}")
            for row in lite.execute(f"EXPLAIN QUERY PLAN {sql[name]}", values):
                print(f"     {row[3]}")
    finally:
        lite.close()


def report(result: Result) -> None:
    print(
        f"  {result.case:<10} {result.items:>7,} items in {result.seconds:6.2f} s: {result.per_second:8,.0f} items/s; "
        f"claim latency p50 {result.percentile(0.5):6.2f} ms, p99 {result.percentile(0.99):6.2f} ms, "
        f"max {max(result.latencies_ms, default=0):6.2f} ms ({len(result.latencies_ms):,} claims)"
    )


async def main_async(args: argparse.Namespace) -> int:
    config = Config(
        runs=args.runs,
        keys=args.keys,
        limit=args.limit,
        workers=args.workers,
        batch=args.batch,
        claims=args.claims,
        others=args.others,
        explain=args.explain,
    )
    print(
        f"Stepline flow-control bench: python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPU(s), load average {support.load_average()}"
    )
    print(
        f"config: runs={config.runs:,} keys={config.keys:,} limit={config.limit} workers={config.workers} "
        f"batch={config.batch} claims={config.claims:,} others={config.others:,}"
    )
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="stepline-benchflow-") as tmp:
        for backend in backends:
            if backend == "postgres" and (reason := support.postgres_unavailable_reason(args.postgres_url)):
                print(f"\n[postgres] skipped: {reason}")
                continue
            print(f"\n[{backend}]")
            try:
                keys = await case_keys(backend, config, args.postgres_url, Path(tmp))
                report(keys)
                baseline, hot, vacuumed = await case_hot_key(backend, config, args.postgres_url, Path(tmp))
                report(baseline)
                report(hot)
                report(vacuumed)
                results += [keys, baseline, hot, vacuumed]
            finally:
                if backend == "postgres":
                    for name in ("keys", "baseline", "hot"):
                        support.drop_database(args.postgres_url, f"stepline_benchflow_{os.getpid()}_{name}")
    print(f"\nSummary (load average now {support.load_average()})")
    print(" backend  case        items   items/s  p50 ms  p99 ms  max ms")
    for result in results:
        print(
            f"{result.backend:>8}  {result.case:<10} {result.items:>6,}  {result.per_second:8,.0f}  "
            f"{result.percentile(0.5):6.2f}  {result.percentile(0.99):6.2f}  {max(result.latencies_ms, default=0):6.2f}"
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Claiming under concurrency limits.")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, default=100_000, help="queued runs (default 100,000)")
    parser.add_argument("--keys", type=int, default=1_000, help="concurrency keys they spread over (default 1,000)")
    parser.add_argument("--limit", type=int, default=2, help="concurrency limit per key (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent claimers (default 4)")
    parser.add_argument("--batch", type=int, default=10, help="items per claim (default 10)")
    parser.add_argument("--claims", type=int, default=20_000, help="items processed in the keys case (default 20,000)")
    parser.add_argument("--others", type=int, default=5_000, help="unlimited runs in the hot-key case (default 5,000)")
    parser.add_argument("--explain", action="store_true", help="print the flow-control query plans")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STEPLINE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL of the PostgreSQL server; bench databases are created next to it and dropped",
    )
    return parser.parse_args(argv)


def main() -> int:
    return asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
