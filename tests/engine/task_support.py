"""Helpers shared by the tracked-task tests: count what an enqueue wrote, read quota rows directly."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from stepline.storage import store


async def written(db: store.Store) -> tuple[int, int, int]:
    """How many tasks, events and runs the store holds (a test writes far fewer than a page)."""
    tasks = await db.list_tasks(owner=None, status=None, cursor=None, limit=500)
    events = await db.list_events(limit=500)
    runs = await db.list_runs(limit=500)
    return len(tasks), len(events), len(runs)


def sqlite_path(database_url: str) -> str:
    return database_url.removeprefix("sqlite:///")


def quota_uses(database_url: str, task_id: str | None = None) -> int:
    """Rows of the ``quota_uses`` table (of one task, if given), read with a plain connection."""
    where, params = ("WHERE task_id = ?", (task_id,)) if task_id else ("", ())
    if database_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(database_url)) as conn:
            row = conn.execute(f"SELECT count(*) FROM quota_uses {where}", params).fetchone()
            return int(row[0])
    pg_where = where.replace("?", "%s")
    with psycopg.connect(database_url) as conn:
        found: Any = conn.execute(f"SELECT count(*) FROM quota_uses {pg_where}", params).fetchone()
        return int(found[0])


@contextlib.contextmanager
def quota_lock_held(database_url: str, feature: str, owner: str) -> Iterator[None]:
    """Hold, from another connection, the lock that serialises quota checks of (feature, owner)
    on PostgreSQL (``lock_quota`` in ``stepline/storage/postgres/queries.sql``): enqueues that
    start meanwhile all get past their first statements and queue up behind it."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s || chr(31) || %s, 7427))", (feature, owner))
        try:
            yield
        finally:
            conn.rollback()


async def wait_for_lock_waiters(database_url: str, count: int, timeout: float = 30.0) -> None:
    """Wait (bounded) until ``count`` sessions wait for an advisory lock in that database."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
            )
            row = await cursor.fetchone()
            waiting = int(row[0]) if row else 0
            if waiting >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"only {waiting} of {count} sessions reached the quota lock in {timeout} s")
            await asyncio.sleep(0.02)
