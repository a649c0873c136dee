"""The app's own small database (SQLite via the standard library): users, jobs, results.

Stepline keeps its state in its own database; this one stands for the tables any web app
already has. The file is ``ROLEREADY_DATABASE`` (default ``.stepline/roleready.db``). Demo users
and their jobs are seeded on start; re-seeding is harmless.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PATH_VARIABLE = "ROLEREADY_DATABASE"
DEFAULT_PATH = ".stepline/roleready.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL, token TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL REFERENCES users(id),
    title TEXT NOT NULL, company TEXT NOT NULL, keywords TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tailored_resumes (
    task_id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id), headline TEXT NOT NULL,
    body TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS tailor_failures (
    task_id TEXT PRIMARY KEY, job_id TEXT, reason TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
"""

DEMO_USERS = [
    ("alice", "Alice", "alice-demo-token"),
    ("bob", "Bob", "bob-demo-token"),
    ("carol", "Carol", "carol-demo-token"),
]
"""(id, name, bearer token). Demo only: a real app issues tokens at login."""

DEMO_JOBS = [
    ("job-a1", "alice", "Senior Python Engineer", "Acme Robotics", "python,asyncio,postgresql,kubernetes"),
    ("job-a2", "alice", "Data Engineer", "Globex", "sql,airflow,python,dbt"),
    ("job-b1", "bob", "Backend Developer", "Initech", "go,grpc,postgresql"),
    ("job-b2", "bob", "Site Reliability Engineer", "Umbrella", "linux,terraform,prometheus"),
    ("job-c1", "carol", "Machine Learning Engineer", "Hooli", "pytorch,python,mlops"),
]

_lock = threading.Lock()
_connection: sqlite3.Connection | None = None


def path() -> Path:
    return Path(os.environ.get(PATH_VARIABLE) or DEFAULT_PATH)


def _connect() -> sqlite3.Connection:
    global _connection
    if _connection is None:
        target = path()
        target.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        conn.executemany("INSERT OR IGNORE INTO users (id, name, token) VALUES (?, ?, ?)", DEMO_USERS)
        conn.executemany(
            "INSERT OR IGNORE INTO jobs (id, owner, title, company, keywords) VALUES (?, ?, ?, ?, ?)", DEMO_JOBS
        )
        _connection = conn
    return _connection


@contextmanager
def connection() -> Iterator[sqlite3.Connection]:
    """The process's connection, one user at a time. Every query here is a small indexed read or
    write (tens of microseconds), so routes call it directly instead of from a thread pool."""
    with _lock:
        yield _connect()


def setup() -> None:
    """Create the tables and seed the demo users and jobs (at app start)."""
    with connection():
        pass
