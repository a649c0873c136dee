"""The sweeper: a task still ``pending`` at its deadline becomes ``failed`` with the reason.

It also forgets old rows of ``task_changes`` (the per-change log task streams read).

A task stays pending when its event triggered no function (no synced app serves it) or when
its run never started (the app is unreachable or the queue is far behind). The sweeper fails
such a task, cancels its queued run so it cannot start later, and refunds the quota when the
task asked for it. Each batch is one transaction that locks the tasks it reads
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several servers sweep without doing a task twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stepline.engine import clock as clock_
from stepline.engine import ingest as ingest_
from stepline.engine import tasks, transitions
from stepline.protocol import durations, models
from stepline.storage import records, store

logger = logging.getLogger("stepline.engine")

BATCH = 100
MAX_IDLE_S = 5.0
"""Longest the sweeper sleeps: other servers may create tasks with earlier deadlines."""
CHANGES_KEPT_MS = 5 * 60_000
"""How long ``task_changes`` rows stay: streams read changes within a second of them; a stream
further behind than this still gets the latest task, only the steps in between are gone."""
PRUNE_EVERY_MS = 30_000


class Sweeper:
    def __init__(
        self,
        db: store.Store,
        ingestor: ingest_.Ingestor,
        clock: clock_.Clock,
        on_swept: Callable[[records.TaskRecord, str], None] | None = None,
    ) -> None:
        self._db = db
        self._ingestor = ingestor
        self._clock = clock
        self._on_swept = on_swept
        self._next_prune = 0

    async def sweep_due(self) -> int:
        """Fail every pending task past its deadline; returns how many were failed. Every
        ``PRUNE_EVERY_MS`` also forgets task changes older than ``CHANGES_KEPT_MS``."""
        now = self._clock.now_ms()
        if now >= self._next_prune:
            await self._db.prune_task_changes(now - CHANGES_KEPT_MS)
            self._next_prune = now + PRUNE_EVERY_MS
        swept = 0
        while True:
            done, more = await self._sweep_batch()
            swept += done
            if not more:
                return swept

    async def seconds_until_due(self) -> float:
        deadline = await self._db.next_pending_deadline()
        if deadline is None:
            return MAX_IDLE_S
        return min(MAX_IDLE_S, max(0.0, (deadline - self._clock.now_ms()) / 1000))

    async def _sweep_batch(self) -> tuple[int, bool]:
        now = self._clock.now_ms()
        failed: list[tuple[records.TaskRecord, str]] = []
        async with self._db.transaction() as tx:
            due = await tx.due_pending_tasks(now, BATCH)
            for task in due:
                reason = await self._verdict(tx, task, now)
                if reason is not None:
                    failed.append((task, reason))
        for task, reason in failed:
            logger.warning("task %s (%s) failed while pending: %s", task.id, task.kind, reason)
            if self._on_swept is not None:
                self._on_swept(task, reason)
        return len(failed), len(due) == BATCH

    async def _verdict(self, tx: store.Transaction, task: records.TaskRecord, now: int) -> str | None:
        """Fail ``task`` (returning why) or, if its run did start, just catch the task up."""
        run = None if task.run_id is None else await tx.lock_run(task.run_id)
        if run is not None and run.status is not records.RunStatus.QUEUED:
            # The run started or ended but the task missed it: follow the run instead of failing.
            await tx.start_task(task.id, now)
            if run.status.is_terminal:
                await tasks.run_ended(tx, run, now)
            return None
        waited = durations.format_duration_ms(task.pending_timeout_ms)
        if run is None:
            event = await self._db.get_event(task.event_id)
            name = event.name if event is not None else "?"
            reason = (
                f"no function is triggered by event {name!r}: no synced app serves it "
                f"(the task was pending for {waited}; sync the app that defines the function)"
            )
        else:
            reason = (
                f"the run {run.id} of {run.function_id} did not start within {waited}: "
                "is the app that serves it running and reachable?"
            )
        await tasks.fail_pending(tx, task, reason, now)
        if run is not None:
            error = models.error_body("TaskPendingTimeout", reason)
            lifecycle = await transitions.end_run(tx, run, records.RunStatus.CANCELLED, now, error=error)
            await self._ingestor.ingest_lifecycle(tx, lifecycle, now)
        return reason
