"""A side SQLite log of step executions, written by apps and read by tests across processes.

Each row is committed before the step body returns, so executions are counted even when the
app or the server is killed with SIGKILL right after. Apps find the file in ``E2E_STEP_LOG``.
This module imports nothing but the standard library: apps import it too.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from pathlib import Path

ENV_VAR = "E2E_STEP_LOG"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS executions (run_id TEXT, fn TEXT, step TEXT, token TEXT, attempt INTEGER,"
    " pid INTEGER, started REAL, ended REAL, note TEXT)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Execution:
    run_id: str
    fn: str
    step: str
    token: str
    attempt: int
    pid: int
    started: float
    ended: float | None
    note: str | None


def _connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(_SCHEMA)
    return conn


class StepLog:
    """The writer side, used inside apps (one connection per call: apps run steps in threads)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path or os.environ.get(ENV_VAR) or "")

    def start(self, run_id: str, fn: str, step: str, token: str, attempt: int, note: str | None = None) -> int:
        if not self.path:
            return 0
        conn = _connect(self.path)
        try:
            cursor = conn.execute(
                "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (run_id, fn, step, token, attempt, os.getpid(), time.time(), note),
            )
            return int(cursor.lastrowid or 0)
        finally:
            conn.close()

    def end(self, row: int) -> None:
        if not self.path or not row:
            return
        conn = _connect(self.path)
        try:
            conn.execute("UPDATE executions SET ended = ? WHERE rowid = ?", (time.time(), row))
        finally:
            conn.close()

    def count(self, run_id: str, step: str) -> int:
        """Executions of ``step`` in ``run_id`` logged so far (including the one in progress)."""
        if not self.path:
            return 0
        conn = _connect(self.path)
        try:
            row = conn.execute(
                "SELECT COUNT(*) FROM executions WHERE run_id = ? AND step = ?", (run_id, step)
            ).fetchone()
            return int(row[0])
        finally:
            conn.close()


def wait_for_steps(log: StepLog, run_id: str, steps: set[str], timeout: float) -> bool:
    """Block until each of ``steps`` of ``run_id`` has started (True), or ``timeout`` s pass (False).

    Parallel steps meet here, so that a test can check they were in flight together even when the
    machine is too busy to start them at the same instant.
    """
    if not log.path:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = _connect(log.path)
        try:
            placeholders = ",".join("?" * len(steps))
            row = conn.execute(
                f"SELECT COUNT(DISTINCT step) FROM executions WHERE run_id = ? AND step IN ({placeholders})",
                (run_id, *sorted(steps)),
            ).fetchone()
        finally:
            conn.close()
        if int(row[0]) == len(steps):
            return True
        time.sleep(0.05)
    return False


def read(path: str | Path) -> list[Execution]:
    """Every logged execution, oldest first."""
    if not Path(path).exists():
        return []
    conn = _connect(path)
    try:
        rows = conn.execute(
            "SELECT run_id, fn, step, token, attempt, pid, started, ended, note FROM executions ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return [
        Execution(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), float(r[6]), r[7], r[8])
        for r in rows
    ]
