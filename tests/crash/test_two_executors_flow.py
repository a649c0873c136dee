"""Two engine processes on one PostgreSQL database never exceed a function's concurrency
limits, function-wide or per key: the limits live in the database, not in either process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

import stepline
from tests.crash import flow_worker

ROOT = Path(__file__).resolve().parents[2]
RUNS = 48
USERS = 6


async def _send(database_url: str) -> None:
    engine = stepline.Engine(
        flow_worker.client, functions=[flow_worker.limited], database_url=database_url, background=False
    )
    async with engine:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute(flow_worker.CREATE_LOG)
        await engine.send([stepline.Event("flow/go", {"user": f"u{n % USERS}"}) for n in range(RUNS)])


def _peak(intervals: list[tuple[datetime, datetime]]) -> int:
    """Most intervals open at one instant (an end at the same instant as a start closes first)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, change in edges:
        open_now += change
        peak = max(peak, open_now)
    return peak


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_executors_keep_the_function_and_key_limits(database_url: str) -> None:
    asyncio.run(_send(database_url))
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.crash.flow_worker", database_url],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in workers:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT run_id, user_key, step, pid, started, ended FROM flow_step_log").fetchall()
        statuses = conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()

    assert dict(statuses) == {"completed": RUNS}
    assert Counter(step for _, _, step, *_ in rows) == {"one": RUNS, "two": RUNS}, "a step ran twice or not at all"
    assert all(ended is not None for *_, ended in rows)
    assert len({pid for _, _, _, pid, _, _ in rows}) == 2, "both processes should have run steps"
    overall = _peak([(started, ended) for *_, started, ended in rows])
    per_user = {
        user: _peak([(started, ended) for _, key, _, _, started, ended in rows if key == user])
        for user in {key for _, key, *_ in rows}
    }
    assert overall <= flow_worker.FUNCTION_LIMIT
    assert overall > 1, "the function limit allows 3 at once: steps should have overlapped"
    assert max(per_user.values()) <= flow_worker.USER_LIMIT
