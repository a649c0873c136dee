"""SQLite's WAL is checkpointed off the event loop and still stays bounded (``storage.sqlite.checkpoint``).

SQLite only: PostgreSQL has no equivalent (its checkpointer is the server's own process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from pathlib import Path

import pytest

import stepline
from stepline.storage import open_store, records
from stepline.storage.sqlite import checkpoint
from stepline.storage.sqlite import store as sqlite_store

BLOB = "x" * 8_000
"""Event data of two or three 4 KiB pages, so that each write adds several frames to the log."""


def _event(n: int) -> records.EventRecord:
    return records.EventRecord(
        internal_id=f"ev{n:08d}", id=f"ev{n:08d}", name="app/big", data={"blob": BLOB}, ts=1, received_at=1
    )


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _open(path: Path) -> sqlite_store.SQLiteStore:
    opened = await open_store(f"sqlite:///{path}")
    assert isinstance(opened, sqlite_store.SQLiteStore)
    return opened


async def test_commits_leave_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    db = await _open(tmp_path / "s.db")
    try:
        # Well past SQLite's default of 1,000 pages, within a moment: no commit checkpointed.
        for n in range(600):
            async with db.transaction() as tx:
                await tx.insert_event(_event(n))
        assert _wal_bytes(db.path) > 1_000 * 4096
        with sqlite3.connect(db.path) as probe:
            assert probe.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)  # a fresh connection's
        assert db._writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    finally:
        await db.close()


async def test_the_log_restarts_under_steady_writes_and_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "DELAY_S", 0.005)
    monkeypatch.setattr(checkpoint, "RESTART_FRAMES", 200)
    db = await _open(tmp_path / "s.db")
    written = 3_000
    try:
        largest = 0
        for n in range(written):
            async with db.transaction() as tx:
                await tx.insert_event(_event(n))
            assert await db.get_event(f"ev{n:08d}") is not None
            largest = max(largest, _wal_bytes(db.path))
            if n % 10 == 0:
                await asyncio.sleep(0.001)  # let the checkpoint task in, as a server's other work would
        # 3,000 writes of 2-3 pages each: a log that never restarted would be past 24 MB. A busy
        # machine delays the checkpoint task (the full suite once saw 8.5 MB), hence the margin.
        assert largest < 12 * 1024 * 1024
        assert len(await db.list_events(limit=written + 1)) == written
    finally:
        await db.close()


async def test_close_leaves_every_write_in_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = await _open(path)
    for n in range(300):
        async with db.transaction() as tx:
            await tx.insert_event(_event(n))
    await db.close()
    assert _wal_bytes(path) == 0
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (300,)
    reopened = await _open(path)
    try:
        assert await reopened.get_event("ev00000299") is not None
    finally:
        await reopened.close()


async def test_a_failing_checkpoint_is_logged_and_writes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(checkpoint, "DELAY_S", 0.001)
    db = await _open(tmp_path / "s.db")
    try:
        db._checkpointer._conn.close()  # type: ignore[union-attr]  # every pass now fails
        async with db.transaction() as tx:
            await tx.insert_event(_event(1))
        for _ in range(200):
            if "WAL checkpoint" in caplog.text:
                break
            await asyncio.sleep(0.005)
        assert "WAL checkpoint" in caplog.text
        async with db.transaction() as tx:
            await tx.insert_event(_event(2))
        assert await db.get_event("ev00000002") is not None
    finally:
        db._checkpointer._conn = None
        await db.close()


async def test_the_file_is_cut_back_after_a_burst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "DELAY_S", 0.005)
    monkeypatch.setattr(checkpoint, "RESTART_FRAMES", 100)
    monkeypatch.setattr(checkpoint, "JOURNAL_SIZE_LIMIT", 512 * 1024)
    db = await _open(tmp_path / "s.db")
    try:
        async with db.transaction() as tx:  # one burst of about 4 MB in the log
            for n in range(500):
                await tx.insert_event(_event(n))
        burst = _wal_bytes(db.path)
        for n in range(500, 800):  # ordinary writes afterwards: the log restarts, the file shrinks
            async with db.transaction() as tx:
                await tx.insert_event(_event(n))
            await asyncio.sleep(0.001)
        after = _wal_bytes(db.path)
    finally:
        await db.close()
    assert burst > 3 * 1024 * 1024
    assert after <= 1024 * 1024


async def test_sync_functions_filling_the_default_executor_never_stall_the_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync functions run on the loop's default executor and wait there on the write lock for
    every step they record; the pass that restarts the log holds that lock, so it must not wait
    for one of those threads (it runs on a thread of its own)."""
    monkeypatch.setattr(checkpoint, "DELAY_S", 0.001)
    monkeypatch.setattr(checkpoint, "RESTART_FRAMES", 50)
    client = stepline.Stepline(app_id="checkpoint-sync")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    def work(ctx: stepline.ContextSync) -> int:
        return sum(ctx.step.run(f"s{n}", lambda n=n: (BLOB[:3000], n)[1]) for n in range(10))

    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    async with stepline.Engine(client, [work], database_url=f"sqlite:///{tmp_path}/e.db", concurrency=32) as engine:
        sent = await engine.send([stepline.Event("test/work", {"n": n}) for n in range(120)])

        async def all_ended() -> None:
            for run_id in sent.run_ids:
                await engine.wait_for_run(run_id, timeout=60)

        await asyncio.wait_for(all_ended(), 90)
        runs = [await engine.get_run(run_id) for run_id in sent.run_ids]
    assert all(run is not None and run.output == 45 for run in runs)
