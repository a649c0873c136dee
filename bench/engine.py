"""Engine benchmark: throughput and latency of an embedded ``stepline.Engine`` on SQLite and PostgreSQL.

::

    .venv/bin/python bench/engine.py [--backend sqlite|postgres|both] [--runs 2000] [--latency-samples 200]

For each backend, in a fresh database per case (a temporary SQLite file; a new PostgreSQL
database created on the server of ``--postgres-url`` and dropped at the end):

* throughput: ``--runs`` events (sent in batches of ``--batch``) each start a run of a function
  with three trivial steps; the figure is the wall time from the first ``send`` to the moment
  every run is terminal (observed by polling a status count on a side connection), as runs/s
  and steps/s, checked against a target. Measured with checkpointing on and off.
* latency: with the engine idle, single events are sent one at a time; each sample is the time
  from ``send`` to the run's completion as observed by ``engine.wait_for_run``.

``--profile DIR`` profiles the timed throughput windows with pyinstrument (HTML and text in DIR).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/engine.py``, sys.path starts with this file's directory; make it the
# repository root so ``bench.support`` imports.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import psycopg

import stepline
from bench import support

STEPS_PER_RUN = 3
EVENT_NAME = "bench/three-steps"
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
TARGET_STEPS_PER_S = {"sqlite": 1000.0, "postgres": 500.0}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POLL_INTERVAL_S = 0.02
"""How often the throughput case counts terminal runs: the resolution of its end time. Each poll is a
query on the benchmark's own connection, served by the same event loop and (on PostgreSQL) server
as the engine, so polling much faster would slow down what it measures."""
THROUGHPUT_WARMUP_RUNS = 10
"""Runs completed before the timed window, so that imports and statement caches are warm."""

client = stepline.Stepline(app_id="bench")


@client.function(id="three-steps", trigger=stepline.on_event(EVENT_NAME))
async def three_steps(ctx: stepline.Context) -> int:
    a = await ctx.step.run("s1", lambda: 1)
    b = await ctx.step.run("s2", lambda: 2)
    c = await ctx.step.run("s3", lambda: 3)
    return a + b + c


# logs: anything the engine warns about while benchmarking is worth reporting


class LogCollector(logging.Handler):
    """Counts WARNING+ records and keeps the first few, to report them with the figures."""

    def __init__(self, keep: int = 5) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []
        self._keep = keep

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < self._keep:
            text = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.first.append(text)


@contextlib.contextmanager
def collect_logs() -> Iterator[LogCollector]:
    """A collector attached to the root logger for the duration of the block."""
    collector = LogCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)


# databases


class BenchDatabase(Protocol):
    backend: str
    url: str

    async def status_counts(self) -> dict[str, int]:
        """Runs by status, read on a connection of the benchmark's own (not the engine's)."""
        ...

    async def step_count(self) -> int: ...

    async def close(self) -> None: ...


class SQLiteBenchDatabase:
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:  # opened lazily: the engine creates and migrates the file
            self._conn = sqlite3.connect(self.path, isolation_level=None)
        return self._conn

    async def status_counts(self) -> dict[str, int]:
        found = self._connection().execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in found}

    async def step_count(self) -> int:
        (count,) = self._connection().execute("SELECT count(*) FROM steps").fetchone()
        return int(count)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresBenchDatabase:
    backend = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        return self._conn

    async def status_counts(self) -> dict[str, int]:
        conn = await self._connection()
        cursor = await conn.execute("SELECT status, count(*) FROM runs GROUP BY status")
        return {str(status): int(count) for status, count in await cursor.fetchall()}

    async def step_count(self) -> int:
        conn = await self._connection()
        cursor = await conn.execute("SELECT count(*) FROM steps")
        row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class DatabaseFactory:
    """Hands out a fresh database per case and removes them all at the end."""

    def __init__(self, postgres_admin_url: str) -> None:
        self._admin_url = postgres_admin_url
        self._tmp = tempfile.TemporaryDirectory(prefix="stepline-bench-")
        self._created: list[str] = []
        self._counter = 0

    def postgres_unavailable_reason(self) -> str | None:
        return support.postgres_unavailable_reason(self._admin_url)

    @contextlib.asynccontextmanager
    async def fresh(self, backend: str) -> AsyncIterator[BenchDatabase]:
        self._counter += 1
        db: BenchDatabase
        if backend == "sqlite":
            db = SQLiteBenchDatabase(Path(self._tmp.name) / f"case{self._counter}.db")
        else:
            name = f"stepline_bench_{os.getpid()}_{self._counter}"
            url = support.create_database(self._admin_url, name)
            self._created.append(name)
            db = PostgresBenchDatabase(url)
        try:
            yield db
        finally:
            await db.close()

    def cleanup(self) -> None:
        for name in self._created:
            try:
                support.drop_database(self._admin_url, name)
            except psycopg.Error as exc:
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)
        self._created = []
        self._tmp.cleanup()


# cases


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    runs: int
    batch: int
    latency_samples: int
    latency_warmup: int
    concurrency: int
    pool_size: int
    timeout_s: float
    profile_dir: Path | None


@dataclasses.dataclass(slots=True)
class ThroughputResult:
    backend: str
    checkpointing: bool
    runs: int
    finished: int
    """Runs of the timed batch that were terminal when the window closed (``runs`` unless it timed out)."""
    send_s: float
    wall_s: float
    completed: bool
    statuses: dict[str, int]
    steps_recorded: int
    queue_left: int
    warnings: int
    first_warnings: list[str]

    @property
    def runs_per_s(self) -> float:
        return self.finished / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.runs_per_s * STEPS_PER_RUN

    @property
    def target(self) -> float:
        return TARGET_STEPS_PER_S[self.backend]

    @property
    def passed(self) -> bool:
        return self.completed and self.steps_per_s >= self.target

    @property
    def verdict(self) -> str:
        """PASS/FAIL against the target, which applies to the default configuration (checkpointing on);
        runs without checkpointing are shown for comparison only."""
        if not self.checkpointing:
            return "(ref)" if self.completed else "INCOMPLETE"
        return "PASS" if self.passed else "FAIL"


@dataclasses.dataclass(slots=True)
class LatencyResult:
    backend: str
    checkpointing: bool
    samples_ms: list[float]
    failures: list[str]
    warnings: int
    first_warnings: list[str]

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in ms."""
        if not self.samples_ms:
            return math.nan
        ordered = sorted(self.samples_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _engine(db: BenchDatabase, config: Config, checkpointing: bool) -> stepline.Engine:
    return stepline.Engine(
        client,
        functions=[three_steps],
        database_url=db.url,
        concurrency=config.concurrency,
        pool_size=config.pool_size,
        checkpointing=checkpointing,
    )


def _terminal(counts: dict[str, int]) -> int:
    return sum(counts.get(status, 0) for status in TERMINAL_STATUSES)


async def _wait_all_terminal(db: BenchDatabase, total: int, deadline: float) -> int:
    """Poll until ``total`` runs are terminal or ``deadline`` (perf_counter) passes; returns how many are."""
    while True:
        terminal = _terminal(await db.status_counts())
        if terminal >= total or time.perf_counter() >= deadline:
            return terminal
        await asyncio.sleep(POLL_INTERVAL_S)


@contextlib.contextmanager
def _profiled(profile_dir: Path | None, label: str) -> Iterator[None]:
    if profile_dir is None:
        yield
        return
    from pyinstrument import Profiler

    # async_mode="disabled": sample the whole loop thread (engine tasks included), not just this task.
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        profile_dir.mkdir(parents=True, exist_ok=True)
        (profile_dir / f"{label}.html").write_text(profiler.output_html())
        (profile_dir / f"{label}.txt").write_text(profiler.output_text(unicode=True, show_all=False))
        print(f"    profile written to {profile_dir / label}.html/.txt")


async def measure_throughput(db: BenchDatabase, config: Config, checkpointing: bool) -> ThroughputResult:
    with collect_logs() as collected:
        async with _engine(db, config, checkpointing) as engine:
            warm = await engine.send([stepline.Event(name=EVENT_NAME) for _ in range(THROUGHPUT_WARMUP_RUNS)])
            for run_id in warm.run_ids:
                await engine.wait_for_run(run_id, timeout=config.timeout_s)
            total = THROUGHPUT_WARMUP_RUNS + config.runs
            events = [stepline.Event(name=EVENT_NAME, data={"i": i}) for i in range(config.runs)]
            label = f"throughput-{db.backend}-checkpointing-{'on' if checkpointing else 'off'}"
            with _profiled(config.profile_dir, label):
                start = time.perf_counter()
                for first in range(0, len(events), config.batch):
                    await engine.send(events[first : first + config.batch])
                sent = time.perf_counter()
                terminal = await _wait_all_terminal(db, total, start + config.timeout_s)
                end = time.perf_counter()
            queue_left = await engine.store.count_queue()
        statuses = await db.status_counts()
        steps = await db.step_count()
    return ThroughputResult(
        backend=db.backend,
        checkpointing=checkpointing,
        runs=config.runs,
        finished=terminal - THROUGHPUT_WARMUP_RUNS,
        send_s=sent - start,
        wall_s=end - start,
        completed=statuses.get("completed", 0) == total,
        statuses=statuses,
        steps_recorded=steps,
        queue_left=queue_left,
        warnings=collected.count,
        first_warnings=collected.first,
    )


async def measure_latency(db: BenchDatabase, config: Config, checkpointing: bool) -> LatencyResult:
    samples: list[float] = []
    failures: list[str] = []
    with collect_logs() as collected:
        async with _engine(db, config, checkpointing) as engine:
            for i in range(config.latency_warmup + config.latency_samples):
                await asyncio.sleep(0.002)  # let the executor settle back to idle
                start = time.perf_counter()
                sent = await engine.send(stepline.Event(name=EVENT_NAME, data={"i": i}))
                try:
                    run = await engine.wait_for_run(sent.run_ids[0], timeout=10.0)
                except stepline.RunTimeoutError as exc:
                    failures.append(str(exc))
                    continue
                elapsed_ms = (time.perf_counter() - start) * 1000
                if run.status != "completed" or run.output != 6:
                    failures.append(f"run {run.id}: status {run.status}, output {run.output!r}, error {run.error}")
                elif i >= config.latency_warmup:
                    samples.append(elapsed_ms)
    return LatencyResult(db.backend, checkpointing, samples, failures, collected.count, collected.first)


# reporting


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


def _print_throughput(result: ThroughputResult) -> None:
    expected_steps = (THROUGHPUT_WARMUP_RUNS + result.runs) * STEPS_PER_RUN
    print(
        f"  throughput  checkpointing={_on_off(result.checkpointing):3}  "
        f"{result.finished} runs in {result.wall_s:.2f} s "
        f"(send {result.send_s:.2f} s): {result.runs_per_s:,.0f} runs/s, {result.steps_per_s:,.0f} steps/s "
        f"[target >= {result.target:,.0f} steps/s: {result.verdict}]"
    )
    if result.finished < result.runs:
        print(
            f"    TIMED OUT: {result.finished}/{result.runs} runs terminal after {result.wall_s:.0f} s "
            f"(rates are over those); statuses after the engine stopped: {result.statuses}"
        )
    elif not result.completed:
        print(f"    not every run completed: statuses {result.statuses}")
    elif result.steps_recorded != expected_steps:
        print(f"    steps recorded {result.steps_recorded}, expected {expected_steps}")
    if result.queue_left and result.finished == result.runs:
        print(f"    {result.queue_left} queue item(s) left after every run ended")
    _print_warnings(result.warnings, result.first_warnings)


def _print_latency(result: LatencyResult) -> None:
    print(
        f"  latency     checkpointing={_on_off(result.checkpointing):3}  {len(result.samples_ms)} samples: "
        f"p50 {result.percentile(50):.2f} ms, p99 {result.percentile(99):.2f} ms, max {result.percentile(100):.2f} ms"
    )
    for failure in result.failures[:5]:
        print(f"    failure: {failure}")
    _print_warnings(result.warnings, result.first_warnings)


def _print_warnings(count: int, first: list[str]) -> None:
    if count:
        print(f"    {count} warning/error log record(s), first: ")
        for line in first:
            print(f"      {line}")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def print_summary(config: Config, throughputs: list[ThroughputResult], latencies: list[LatencyResult]) -> None:
    print()
    print(f"Summary (concurrency {config.concurrency}, pool_size {config.pool_size}, batch {config.batch})")
    rows = [["backend", "checkpoint", "runs", "send s", "wall s", "runs/s", "steps/s", "target", "result"]]
    for t in throughputs:
        rows.append(
            [
                t.backend,
                _on_off(t.checkpointing),
                str(t.finished) if t.finished == t.runs else f"{t.finished}/{t.runs}",
                f"{t.send_s:.2f}",
                f"{t.wall_s:.2f}",
                f"{t.runs_per_s:,.0f}",
                f"{t.steps_per_s:,.0f}",
                f">= {t.target:,.0f}",
                t.verdict,
            ]
        )
    if throughputs:
        print(_table(rows))
    rows = [["backend", "checkpoint", "samples", "p50 ms", "p99 ms", "max ms", "failures"]]
    for lat in latencies:
        rows.append(
            [
                lat.backend,
                _on_off(lat.checkpointing),
                str(len(lat.samples_ms)),
                f"{lat.percentile(50):.2f}",
                f"{lat.percentile(99):.2f}",
                f"{lat.percentile(100):.2f}",
                str(len(lat.failures)),
            ]
        )
    if latencies:
        print()
        print(_table(rows))


# main


async def bench_backend(
    backend: str,
    factory: DatabaseFactory,
    config: Config,
    modes: list[bool],
    latency: bool,
) -> tuple[list[ThroughputResult], list[LatencyResult]]:
    throughputs: list[ThroughputResult] = []
    latencies: list[LatencyResult] = []
    for checkpointing in modes:
        async with factory.fresh(backend) as db:
            result = await measure_throughput(db, config, checkpointing)
        _print_throughput(result)
        throughputs.append(result)
    if latency:
        for checkpointing in modes:
            async with factory.fresh(backend) as db:
                lat = await measure_latency(db, config, checkpointing)
            _print_latency(lat)
            latencies.append(lat)
    return throughputs, latencies


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Throughput and latency of the embedded Stepline engine.")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, default=2000, help="runs in the throughput case (default 2000)")
    parser.add_argument("--batch", type=int, default=100, help="events per engine.send in the throughput case")
    parser.add_argument("--latency-samples", type=int, default=200, help="timed latency samples (default 200)")
    parser.add_argument("--latency-warmup", type=int, default=20, help="untimed latency samples first (default 20)")
    parser.add_argument("--skip-latency", action="store_true", help="run the throughput case only")
    parser.add_argument(
        "--checkpointing", choices=["on", "off", "both"], default="both", help="engine checkpointing modes to run"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="Engine(concurrency=...) (default 32)")
    parser.add_argument("--pool-size", type=int, default=10, help="Engine(pool_size=...) for PostgreSQL (default 10)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a throughput case may take")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STEPLINE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL of the PostgreSQL server; bench databases are created next to it and dropped",
    )
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="pyinstrument the throughput cases")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> int:
    config = Config(
        runs=args.runs,
        batch=args.batch,
        latency_samples=args.latency_samples,
        latency_warmup=args.latency_warmup,
        concurrency=args.concurrency,
        pool_size=args.pool_size,
        timeout_s=args.timeout,
        profile_dir=args.profile,
    )
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.checkpointing]
    print(
        f"Stepline engine bench: python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPU(s), load average {support.load_average()}"
    )
    print(
        f"config: concurrency={config.concurrency} pool_size={config.pool_size} "
        f"checkpointing={args.checkpointing} runs={config.runs} batch={config.batch} "
        f"latency_samples={config.latency_samples} (+{config.latency_warmup} warm-up) "
        f"steps/run={STEPS_PER_RUN}"
    )
    factory = DatabaseFactory(args.postgres_url)
    throughputs: list[ThroughputResult] = []
    latencies: list[LatencyResult] = []
    failed = False
    try:
        for backend in backends:
            if backend == "postgres" and (reason := factory.postgres_unavailable_reason()) is not None:
                print(f"\n[postgres] skipped: {reason}")
                failed = failed or args.backend == "postgres"
                continue
            print(f"\n[{backend}]")
            began = time.perf_counter()
            t, lat = await bench_backend(backend, factory, config, modes, not args.skip_latency)
            took = time.perf_counter() - began
            print(f"  ({backend} cases took {took:.1f} s; load average now {support.load_average()})")
            throughputs += t
            latencies += lat
    finally:
        factory.cleanup()
    print_summary(config, throughputs, latencies)
    failed = (
        failed or any(t.verdict not in ("PASS", "(ref)") for t in throughputs) or any(lat.failures for lat in latencies)
    )
    return 1 if failed else 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
