"""WAL checkpoints off the event loop, so that no write waits for one.

In WAL mode SQLite appends each commit to the ``-wal`` file, and by default the commit that
takes the log past 1,000 pages copies the log back into the database file and syncs both: a
stall of 10-100 ms on whichever write crossed the line (an enqueue on a request's path, a
step's result). The store turns that off (``wal_autocheckpoint=0``) and runs a ``Checkpointer``
instead, which copies the log on a thread of its own shortly after writes (``PASSIVE``: it
waits for no reader and no writer; ``sqlite3`` releases the GIL while SQLite works). The thread
is its own and not the loop's default executor: sync user functions run there and wait on the
write lock for each step they record, so a pass queued behind them while holding that lock
would never run.

Copying is not enough on its own: the log only starts again from the top when a write begins
after a checkpoint that copied *all* of it, and under steady writes some write always lands
while a checkpoint runs. So once the log is past ``RESTART_FRAMES``, one more pass runs while
the store's write lock is held: it copies the few frames written since the last pass, nothing
can be appended meanwhile, and the next write restarts the log. Writes wait for that short pass
(a few milliseconds, once per ``RESTART_FRAMES`` pages written); reads never do. The writer's
``journal_size_limit`` (set by the store) cuts the file back when the log restarts after a burst.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
from pathlib import Path

from stepline import errors

logger = logging.getLogger("stepline.storage.sqlite")

DELAY_S = 0.1
"""How long after a write the checkpoint starts: writes closer together share one checkpoint."""
RESTART_FRAMES = 4_000
"""Pages (4 KiB) in the log past which a checkpoint holds the write lock to restart the log."""
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the store's writer cuts the ``-wal`` file back to when the log restarts after a burst."""


class Checkpointer:
    """Checkpoints one database's WAL after writes; ``written`` after each commit."""

    def __init__(self, path: Path, write_lock: asyncio.Lock) -> None:
        self._path = path
        self._write_lock = write_lock
        self._written = asyncio.Event()
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._pass_running: asyncio.Future[int] | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stepline-checkpoint")

    def start(self) -> None:
        try:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise errors.StorageError(f"cannot open SQLite database {self._path}: {exc}") from exc
        self._task = asyncio.create_task(self._run(), name=f"stepline checkpoints {self._path.name}")

    def written(self) -> None:
        self._written.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pass_running is not None:
            await self._pass_running  # the thread still uses the connection: let it finish
        self._thread.shutdown(wait=False)  # idle now
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while True:
            await self._written.wait()
            await asyncio.sleep(DELAY_S)
            self._written.clear()
            try:
                frames = await self._pass_off_loop()
                if frames > RESTART_FRAMES:
                    async with self._write_lock:
                        await self._pass_off_loop()
            except Exception:  # whatever it was, the log must not grow for good: try at the next write
                logger.exception("WAL checkpoint of %s failed", self._path)

    async def _pass_off_loop(self) -> int:
        running = asyncio.get_running_loop().run_in_executor(self._thread, self._pass)
        self._pass_running = running
        try:
            return await asyncio.shield(running)  # cancelling the task leaves the thread's pass alone
        finally:
            if running.done():
                self._pass_running = None

    def _pass(self) -> int:
        """One ``PASSIVE`` checkpoint; returns the frames in the log (0 when it failed)."""
        assert self._conn is not None
        try:
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # e.g. the disk is full: the next write tries again
            logger.warning("WAL checkpoint of %s failed: %s", self._path, exc)
            return 0
        return int(row[1]) if row is not None else 0
