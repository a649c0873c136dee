"""A process running the embedded engine, for crash and multi-process tests.

``python -m tests.crash.worker DATABASE_URL LOG_PATH MODE [COUNT]``

MODE ``send``: send COUNT events, then execute until killed.
MODE ``work``: execute until every run in the database has ended, then print ``done`` and exit 0.

Every step execution is logged (run id, step, attempt, pid, start and end times) to a side
SQLite file at LOG_PATH, committed before the step returns, so a test can count executions
across processes that were killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import stepline

SLOW_STEP_SECONDS = float(os.environ.get("STEPLINE_CRASH_SLOW_STEP", "0"))
STEP_PAUSE_SECONDS = float(os.environ.get("STEPLINE_CRASH_STEP_PAUSE", "0"))
SLEEP_SECONDS = float(os.environ.get("STEPLINE_CRASH_SLEEP", "1"))

client = stepline.Stepline(app_id="crash")


def open_log(path: str) -> sqlite3.Connection:
    """The executions log, created (in WAL mode) if new. A test starting several workers on one
    log creates it first: two connections switching a new file to WAL at the same moment can fail
    with 'database is locked' at once, without waiting out the busy timeout."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS executions (run_id TEXT, step TEXT, attempt INTEGER, pid INTEGER,"
        " started REAL, ended REAL)"
    )
    return conn


class StepLog:
    def __init__(self, path: str) -> None:
        self._conn = open_log(path)

    def start(self, run_id: str, step: str, attempt: int) -> int:
        cursor = self._conn.execute(
            "INSERT INTO executions VALUES (?, ?, ?, ?, ?, NULL)", (run_id, step, attempt, os.getpid(), time.time())
        )
        return int(cursor.lastrowid or 0)

    def end(self, row: int) -> None:
        self._conn.execute("UPDATE executions SET ended = ? WHERE rowid = ?", (time.time(), row))


LOG: StepLog | None = None


def logged(ctx: stepline.Context, name: str, seconds: float) -> Callable[[], Awaitable[str]]:
    async def body() -> str:
        assert LOG is not None
        row = LOG.start(ctx.run_id, name, ctx.attempt)
        if seconds:
            await asyncio.sleep(seconds)
        LOG.end(row)
        return f"{name}-done"

    return body


@client.function(id="crashy", trigger=stepline.on_event("crash/go"), retries=5)
async def crashy(ctx: stepline.Context) -> dict[str, str]:
    first = await ctx.step.run("s1", logged(ctx, "s1", STEP_PAUSE_SECONDS))
    second = await ctx.step.run("s2", logged(ctx, "s2", SLOW_STEP_SECONDS or STEP_PAUSE_SECONDS))
    third = await ctx.step.run("s3", logged(ctx, "s3", STEP_PAUSE_SECONDS))
    await ctx.step.sleep("nap", timedelta(seconds=SLEEP_SECONDS))
    fourth = await ctx.step.run("s4", logged(ctx, "s4", STEP_PAUSE_SECONDS))
    return {"s1": first, "s2": second, "s3": third, "s4": fourth}


async def all_runs_ended(engine: stepline.Engine) -> bool:
    return await engine.store.count_queue() == 0


async def main(database_url: str, log_path: str, mode: str, count: int) -> int:
    global LOG
    LOG = StepLog(log_path)
    engine = stepline.Engine(
        client,
        functions=[crashy],
        database_url=database_url,
        lease=timedelta(seconds=2),
        poll_interval=timedelta(milliseconds=200),
        concurrency=8,
    )
    async with engine:
        if mode == "send":
            await engine.send([stepline.Event(name="crash/go", data={"n": n}) for n in range(count)])
            print("sent", flush=True)
            await asyncio.Event().wait()  # run until killed
        while not await all_runs_ended(engine):  # noqa: ASYNC110 - polling the database, not an in-process flag
            await asyncio.sleep(0.1)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    url, path, chosen_mode = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.exit(asyncio.run(main(url, path, chosen_mode, int(sys.argv[4]) if len(sys.argv) > 4 else 0)))
