"""An engine process running a function under concurrency limits, for the two-executor test.

``python -m tests.crash.flow_worker DATABASE_URL``: execute until every run in the database
has ended, then print ``done`` and exit 0.

Each step inserts a row into the side table ``flow_step_log`` (created by the test) when it starts and sets its end
when it finishes, with PostgreSQL's ``clock_timestamp()``, so the intervals of both processes
are on one clock.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

import psycopg

import stepline
from tests.engine.flow_support import with_flow

FUNCTION_LIMIT = 3
USER_LIMIT = 1
STEP_SECONDS = 0.03
CREATE_LOG = """
CREATE TABLE IF NOT EXISTS flow_step_log (
    id SERIAL PRIMARY KEY, run_id TEXT NOT NULL, user_key TEXT NOT NULL, step TEXT NOT NULL,
    pid INTEGER NOT NULL, started TIMESTAMPTZ NOT NULL, ended TIMESTAMPTZ
)
"""

client = stepline.Stepline(app_id="flowcrash")
LOG: psycopg.AsyncConnection[tuple[object, ...]] | None = None
LOCK = asyncio.Lock()


async def logged(run_id: str, user: str, step: str) -> str:
    assert LOG is not None
    async with LOCK:  # one connection, shared by this process's concurrent steps
        cursor = await LOG.execute(
            "INSERT INTO flow_step_log (run_id, user_key, step, pid, started)"
            " VALUES (%s, %s, %s, pg_backend_pid(), clock_timestamp()) RETURNING id",
            (run_id, user, step),
        )
        row = await cursor.fetchone()
    assert row is not None
    await asyncio.sleep(STEP_SECONDS)
    async with LOCK:
        await LOG.execute("UPDATE flow_step_log SET ended = clock_timestamp() WHERE id = %s", (row[0],))
    return step


@client.function(id="limited", trigger=stepline.on_event("flow/go"))
async def _limited(ctx: stepline.Context) -> None:
    user = str(ctx.event.data["user"])
    await ctx.step.run("one", logged, ctx.run_id, user, "one")
    await ctx.step.sleep("pause", timedelta(milliseconds=50))
    await ctx.step.run("two", logged, ctx.run_id, user, "two")


limited = with_flow(_limited, concurrency=[{"limit": FUNCTION_LIMIT}, {"limit": USER_LIMIT, "key": "event.data.user"}])


async def main(database_url: str) -> int:
    global LOG
    LOG = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    engine = stepline.Engine(
        client,
        functions=[limited],
        database_url=database_url,
        lease=timedelta(seconds=5),
        poll_interval=timedelta(milliseconds=100),
        concurrency=8,
    )
    async with engine:
        while await engine.store.count_queue() > 0:  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.1)
    await LOG.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
