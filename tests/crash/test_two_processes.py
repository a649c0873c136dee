"""Two engine processes on one PostgreSQL database share the work and never run the same step twice."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

import stepline
from tests.crash import worker
from tests.crash.test_kill import _start_worker, _statuses

RUNS = 60


async def _send(database_url: str) -> None:
    engine = stepline.Engine(worker.client, functions=[worker.crashy], database_url=database_url, background=False)
    async with engine:
        await engine.send([stepline.Event(name="crash/go", data={"n": n}) for n in range(RUNS)])


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_processes_never_run_the_same_step_at_once(database_url: str, tmp_path: Path) -> None:
    asyncio.run(_send(database_url))
    log = tmp_path / "executions.db"
    worker.open_log(str(log)).close()  # before the workers, which would otherwise race to create it
    env = {"STEPLINE_CRASH_STEP_PAUSE": "0.05", "STEPLINE_CRASH_SLEEP": "0.1"}
    workers = [_start_worker(database_url, log, "work", env=env) for _ in range(2)]
    for process in workers:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
    with sqlite3.connect(log) as conn:
        rows = conn.execute("SELECT run_id, step, pid, started, ended FROM executions").fetchall()
    counts = Counter((run_id, step) for run_id, step, *_ in rows)
    assert len(counts) == RUNS * 4
    assert set(counts.values()) == {1}, "a step ran more than once"
    assert len({pid for _, _, pid, _, _ in rows}) == 2, "both processes should have taken a share of the work"
    assert _statuses(database_url, {run_id for run_id, *_ in rows}) == {"completed"}
