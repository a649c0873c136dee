"""Durability under SIGKILL: a new process finishes every run, and no recorded step runs again.

The engine runs in a real subprocess (``tests.crash.worker``) that is killed with SIGKILL
mid-step and while runs sleep; a second process on the same database takes over once the
dead process's leases (2 s) expire. Step executions are counted in a side SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from stepline import storage

pytestmark = pytest.mark.crash

ROOT = Path(__file__).resolve().parents[2]
RUNS = 6


def _start_worker(
    database_url: str, log: Path, mode: str, count: int = 0, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash.worker", database_url, str(log), mode, str(count)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _executions(log: Path) -> list[tuple[str, str, int, float, float | None]]:
    if not log.exists():
        return []
    with sqlite3.connect(log, timeout=30) as conn:
        try:
            rows = conn.execute("SELECT run_id, step, pid, started, ended FROM executions").fetchall()
        except sqlite3.OperationalError:
            return []
    return [(str(r[0]), str(r[1]), int(r[2]), float(r[3]), r[4]) for r in rows]


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def _finish(database_url: str, log: Path) -> None:
    survivor = _start_worker(database_url, log, "work")
    try:
        out, err = survivor.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        survivor.kill()
        out, err = survivor.communicate()
        raise AssertionError(f"the second process did not finish the runs:\n{out}\n{err[-3000:]}") from None
    assert survivor.returncode == 0, err[-3000:]
    assert "done" in out


def _counts(log: Path) -> Counter[tuple[str, str]]:
    return Counter((run_id, step) for run_id, step, *_ in _executions(log))


def _statuses(database_url: str, run_ids: set[str]) -> set[str]:
    """Statuses of the given runs, read by a fresh store (as any later process would)."""

    async def read() -> set[str]:
        db = await storage.open_store(database_url)
        try:
            found = [await db.get_run(run_id) for run_id in run_ids]
        finally:
            await db.close()
        return {run.status.value if run else "missing" for run in found}

    return asyncio.run(read())


def _recorded_step_names(database_url: str, run_ids: set[str]) -> list[set[str]]:
    async def read() -> list[set[str]]:
        db = await storage.open_store(database_url)
        try:
            return [{step.name for step in await db.list_steps(run_id)} for run_id in run_ids]
        finally:
            await db.close()

    return asyncio.run(read())


def _all_recorded(database_url: str, log: Path, steps: set[str]) -> bool:
    run_ids = {run_id for run_id, *_ in _executions(log)}
    if len(run_ids) < RUNS:
        return False
    return all(steps <= names for names in _recorded_step_names(database_url, run_ids))


def test_kill_mid_step_loses_nothing_and_never_reruns_recorded_steps(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "executions.db"
    victim = _start_worker(database_url, log, "send", RUNS, {"STEPLINE_CRASH_SLOW_STEP": "30"})
    try:
        # Every run is inside its slow second step.
        _wait_until(
            lambda: sum(1 for _, step, *_ in _executions(log) if step == "s2") == RUNS, 60, "all runs to enter s2"
        )
    finally:
        _kill(victim)
    _finish(database_url, log)
    counts = _counts(log)
    run_ids = {run_id for run_id, _ in counts}
    assert len(run_ids) == RUNS
    for run_id in run_ids:
        assert counts[(run_id, "s1")] == 1, "s1 was recorded before the kill and must not run again"
        assert counts[(run_id, "s2")] == 2, "s2 was in flight at the kill: it runs again, once"
        assert counts[(run_id, "s3")] == 1
        assert counts[(run_id, "s4")] == 1
    assert _statuses(database_url, run_ids) == {"completed"}


def test_kill_while_sleeping_loses_nothing(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "executions.db"
    victim = _start_worker(database_url, log, "send", RUNS, {"STEPLINE_CRASH_SLEEP": "6"})
    try:
        _wait_until(lambda: _all_recorded(database_url, log, {"s1", "s2", "s3"}), 60, "all runs to sleep")
    finally:
        _kill(victim)
    _finish(database_url, log)
    counts = _counts(log)
    assert len({run_id for run_id, _ in counts}) == RUNS
    assert set(counts.values()) == {1}, f"every step ran exactly once: {counts}"
    assert {step for _, step in counts} == {"s1", "s2", "s3", "s4"}
    assert _statuses(database_url, {run_id for run_id, _ in counts}) == {"completed"}
