"""The engine machinery shared by the embedded ``Engine`` and the server's runtime.

Owns the store, the executor, the cron loop and the run-level operations (send, get, wait,
cancel, rerun). Subclasses say where functions come from and how calls reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from stepline import errors
from stepline.engine import apply as apply_
from stepline.engine import (
    background_thread,
    dispatch,
    executor,
    ingest,
    observe,
    retry,
    sweeper,
    tasks,
    transitions,
    views,
)
from stepline.engine import clock as clock_
from stepline.engine import cron as cron_
from stepline.engine import registry as registry_
from stepline.engine import retention as retention_
from stepline.protocol import models
from stepline.storage import open_store, records, store

logger = logging.getLogger("stepline.engine")

FORKED = (
    "this engine was started in the parent process before it forked (gunicorn --preload?), and its "
    "thread did not survive the fork: start engines in each worker, after the fork (gunicorn: post_fork)"
)


class EngineCore:
    """Runs the functions of ``registry`` durably on ``database_url`` (SQLite or PostgreSQL).

    ``concurrency`` bounds calls in flight; ``lease`` is how long a claimed item stays
    exclusive without a heartbeat; ``poll_interval`` is the fallback scan period (wake-ups
    are immediate in-process and through ``LISTEN/NOTIFY`` on PostgreSQL). ``retention`` is how
    long finished history is kept (``engine.retention``: a ``timedelta`` or a time string such
    as ``"7d"``; None or ``"off"`` keeps it forever). With ``execute_runs=False`` the engine
    accepts, reads and changes work but leaves running it (the executor, crons, the task
    sweeper, retention) to other engines on the same database: an API-only server.
    """

    executes = True
    """False for a runtime that only writes and reads (``engine.direct``): it starts no executor,
    cron scheduler, sweeper or retention, registers no cron schedules and migrates nothing (it refuses a
    schema other than its own); servers do all of that."""

    def __init__(
        self,
        registry: registry_.Registry,
        database_url: str,
        *,
        concurrency: int = 32,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(seconds=1),
        pool_size: int = 10,
        checkpointing: bool = True,
        clock: clock_.Clock | None = None,
        background: bool = True,
        retention: timedelta | str | None = retention_.DEFAULT,
        execute_runs: bool = True,
    ) -> None:
        if concurrency < 1:
            raise errors.ConfigurationError(f"concurrency must be at least 1 (got {concurrency})")
        if lease < timedelta(seconds=1):
            raise errors.ConfigurationError(f"lease must be at least 1 second (got {lease})")
        self.registry = registry
        self.database_url = database_url
        self.clock: clock_.Clock = clock or clock_.SystemClock()
        self._concurrency = concurrency
        self._lease_ms = int(lease.total_seconds() * 1000)
        self._poll_interval_s = poll_interval.total_seconds()
        self._pool_size = pool_size
        self._checkpointing = checkpointing
        self._background = background
        self._execute_runs = execute_runs
        self._retention_period = retention_.parse(retention)
        self._db: store.Store | None = None
        self._executor: executor.Executor | None = None
        self._cron: cron_.CronScheduler | None = None
        self._sweeper: sweeper.Sweeper | None = None
        self._retention: retention_.Retention | None = None
        self._ingestor = ingest.Ingestor(self.registry)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        """A stop is under way (from its start until the database is closed)."""
        self._closing: asyncio.Task[None] | None = None
        """The end of a stop, while it runs: a task of its own, so that no cancellation of the
        caller cuts it short, and ``start`` waits for it before opening the database again."""
        self._run_ended = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_thread = background_thread.EngineThread(self.start, self.stop)

    # what subclasses provide
    def _transport(self) -> dispatch.Transport:
        raise NotImplementedError

    async def _on_open(self) -> None:
        """Called with the store open, before executing starts (register functions, load apps)."""

    async def _on_close(self) -> None:
        """Called before the store closes."""

    def _planned_from(self) -> records.FunctionsFingerprint | None:
        """The fingerprint of the synced functions the registry holds, when it holds those (a
        server's): task plans carry it, and the store refuses them once the table changed. None
        for functions of this process (an embedded engine's)."""
        return None

    async def _reload_functions(self) -> None:
        """Read the synced functions again (after a plan came back ``stale``)."""

    def _background_jobs(self) -> list[Coroutine[Any, Any, None]]:
        """Extra loops to run while started (in background mode)."""
        return []

    # lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        self.start_in_thread()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_in_thread()

    def start_in_thread(self) -> None:
        """``start`` for synchronous apps (Flask, Django, scripts), which have no event loop to
        lend: the engine runs on a loop of its own daemon thread until ``stop_in_thread`` (or the
        interpreter's exit), and the app calls it through ``client.send_sync`` and
        ``client.tasks.*_sync``. ``with engine:`` does both. Raises what ``start`` raises."""
        if self._own_thread.forked:
            raise errors.ConfigurationError(FORKED)
        self._forget_a_closed_loop()
        if self._db is not None:
            raise errors.ConfigurationError("the engine is already started")
        self._own_thread.start()

    def _forget_a_closed_loop(self) -> None:
        """When the loop the engine last ran on is closed (a thread's stop that gave up before
        its closing ended), nothing left on that loop can ever run: the engine counts as stopped.
        The database connections opened there cannot be closed from another loop."""
        if self._loop is not None and self._loop.is_closed():
            self._forget_the_run()

    @property
    def forked(self) -> bool:
        """Whether this process is a fork of the one that started this engine in a thread."""
        return self._own_thread.forked

    def stop_in_thread(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Stop an engine started by ``start_in_thread`` (see ``stop``); nothing if it is not running."""
        self._own_thread.stop(grace)

    def _require_own_loop(self, doing: str) -> None:
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            raise errors.ConfigurationError(
                f"cannot {doing} the engine from this event loop: it runs on another one "
                "(started with start_in_thread or 'with engine:'? then stop it with stop_in_thread)"
            )

    async def start(self) -> None:
        """Open the database, register functions and (unless ``background=False``) start executing."""
        self._forget_a_closed_loop()
        closing = self._closing
        if closing is not None and closing.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(closing)  # a stop still closing (its caller stopped waiting): let it end
        if self._stopping:
            raise errors.ConfigurationError("the engine is stopping: start it again once stop() has returned")
        if self._db is not None:
            self._require_own_loop("start")
            return
        self._loop = asyncio.get_running_loop()
        # A runtime that executes nothing uses the servers' schema without changing it.
        self._db = await open_store(
            self.database_url, pool_size=self._pool_size, migrate=self.executes, listen=self.executes
        )
        try:
            await self._on_open()
        except BaseException:
            await self._db.close()
            self._db = None
            raise
        if not self.executes:
            return
        try:
            await self._start_executing(self._db)
        except BaseException:  # nothing half-started stays behind: the engine can start again
            await self.stop(timedelta(0))
            raise

    async def _start_executing(self, db: store.Store) -> None:
        applier = apply_.Applier(
            db,
            self.registry,
            self._ingestor,
            self.clock,
            lease_ms=self._lease_ms,
            reload_functions=self._reload_functions,
        )
        self._executor = executor.Executor(
            db,
            self.registry,
            applier,
            self._transport(),
            self.clock,
            concurrency=self._concurrency,
            lease_ms=self._lease_ms,
            poll_interval_s=self._poll_interval_s,
            on_run_ended=self._note_run_ended,
            checkpointing=self._checkpointing,
            reload_functions=self._reload_functions,
        )
        self._cron = cron_.CronScheduler(db, self.registry, self._ingestor, self.clock)
        self._sweeper = sweeper.Sweeper(db, self._ingestor, self.clock, on_swept=self._note_task_swept)
        if self._retention_period is not None:
            self._retention = retention_.Retention(db, self.clock, self._retention_period)
        await self._register_crons()
        if self._background:
            jobs = self._background_jobs()
            if self._execute_runs:
                jobs += [self._executor.run_forever(), self._cron_loop(), self._sweep_loop()]
                if self._retention is not None:
                    jobs.append(self._retention.run_forever())
            self._tasks = [asyncio.create_task(job) for job in jobs]

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Stop executing (in-flight calls get ``grace`` to finish) and close the database."""
        if self._closing is not None:  # another stop is closing the engine (or its caller gave up)
            await asyncio.shield(self._closing)
            return
        if self._db is None:
            return
        self._require_own_loop("stop")
        self._stopping = True
        background = self._tasks
        discarded = False
        try:
            if self._executor is not None:
                await self._executor.stop(grace.total_seconds())
            await _cancel_all(background)
        except GeneratorExit:  # garbage-collected with its loop closed (a thread's stop gave up)
            discarded = True
            raise
        finally:
            # However the stop ends (a caller's timeout cancelling it during the grace, an error),
            # the engine closes: nothing is left running on a closed store, the client is
            # detached, and the engine can start again. In a task of its own, which a caller
            # cancelled again (anyio's cancel scopes cancel at every await) cannot cut short.
            if not discarded:
                self._closing = asyncio.get_running_loop().create_task(self._close(background))
                await asyncio.shield(self._closing)

    async def _close(self, background: list[asyncio.Task[None]]) -> None:
        db = self._db
        try:
            leftovers = [task for task in background if not task.done()]
            if self._executor is not None:
                leftovers += self._executor.abandon()
            for task in leftovers:
                task.cancel()
            if leftovers:
                await asyncio.wait(leftovers, timeout=1.0)
            try:
                await self._on_close()
            finally:
                if db is not None:
                    await db.close()
        finally:
            if self._db is db:  # not an engine started again since (on a new loop, this one forgotten)
                self._forget_the_run()

    def _forget_the_run(self) -> None:
        """Stopped: no database, no background tasks, no stop under way."""
        self._db, self._tasks, self._retention, self._closing, self._stopping = None, [], None, None, False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the engine was started on (None before ``start``)."""
        return self._loop

    @property
    def store(self) -> store.Store:
        if self._db is None:
            raise errors.ConfigurationError(
                "the engine is not started: use 'async with engine:' or await engine.start()"
            )
        return self._db

    # events
    async def send_wire(self, wire: list[dict[str, Any]]) -> ingest.IngestResult:
        """Accept events in wire form: stored with the runs they start, atomically."""
        now = self.clock.now_ms()
        for attempt in range(tasks.STALE_PLANS):
            # A server's registry is a copy of the functions table, reloaded every few seconds:
            # events accepted in between must still start the functions synced (through another
            # server) before them, so the insert checks the copy is current (no extra round trip).
            last = attempt == tasks.STALE_PLANS - 1
            functions = None if last else self._planned_from()
            try:
                async with self.store.transaction() as tx:
                    return await self._ingestor.ingest(tx, wire, now, functions=functions)
            except ingest.StaleFunctions:
                await self._reload_functions()
        raise AssertionError("unreachable: the last attempt ingests unchecked")

    # runs
    async def get_run(self, run_id: str) -> views.Run | None:
        found = await self.store.get_run_with_steps(run_id)
        return None if found is None else views.Run.from_records(*found)

    async def wait_for_run(self, run_id: str, timeout: float = 30.0) -> views.Run:
        """Wait until the run is completed, failed or cancelled; ``RunTimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self._run_ended.clear()
            run = await self.get_run(run_id)
            if run is None:
                raise errors.RunNotFoundError(f"no run {run_id!r}")
            if run.status.is_terminal:
                return run
            if not self._background:
                if await self.run_until_idle() == 0:
                    raise errors.RunTimeoutError(
                        f"run {run_id} is still {run.status.value} and nothing is ready to run: "
                        "advance the clock past its sleeps, retries or wait timeouts"
                    )
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.RunTimeoutError(f"run {run_id} is still {run.status.value} after {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_ended.wait(), timeout=min(remaining, self._poll_interval_s))

    async def cancel_run(self, run_id: str) -> bool:
        """Cancel a run that has not ended: it stops before its next step. False if it had already ended."""
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            run = await tx.lock_run(run_id)
            if run is None:
                raise errors.RunNotFoundError(f"no run {run_id!r}")
            if run.status.is_terminal:
                return False
            error = models.error_body("Cancelled", "the run was cancelled")
            lifecycle = await transitions.end_run(tx, run, records.RunStatus.CANCELLED, now, error=error)
            await self._ingestor.ingest_lifecycle(tx, lifecycle, now)
        observe.run_ended(run)
        self._note_run_ended(run_id)
        return True

    async def run_until_idle(self) -> int:
        """Fire due crons and process every ready item until nothing is ready; returns items processed."""
        if self._executor is None or self._cron is None or self._sweeper is None:
            raise errors.ConfigurationError("the engine is not started")
        processed = 0
        while True:
            fired = await self._cron.fire_due()
            swept = await self._sweeper.sweep_due()
            done = await self._executor.run_until_idle()
            processed += done
            if not fired and not swept and done == 0:
                return processed

    @property
    def retention(self) -> timedelta | None:
        """How long finished history is kept (None: forever)."""
        return self._retention_period

    async def purge_history(self) -> dict[str, int]:
        """Delete finished history older than ``retention`` now, as the background pass does every
        minute; returns the rows deleted per table (nothing when retention is off). Not part of
        ``run_until_idle``: a test advancing its clock by days keeps the runs it looks at."""
        if self._executor is None:
            raise errors.ConfigurationError("the engine is not started")
        return {} if self._retention is None else await self._retention.purge()

    async def rerun(self, run_id: str) -> str:
        """Start a new run of the same function with the same triggering events; returns its id."""
        original = await self.store.get_run(run_id)
        if original is None:
            raise errors.RunNotFoundError(f"no run {run_id!r}")
        spec = self.registry.get(original.function_id)
        if spec is None:
            raise errors.FunctionNotFoundError(f"function {original.function_id!r} is no longer registered")
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            return await self._ingestor.rerun(tx, spec, original, now)

    # tasks
    async def enqueue_task(self, request: tasks.TaskRequest) -> tasks.Enqueued:
        """Create a task with its quota use, event and runs in one transaction (see ``engine.tasks``).

        ``QuotaExceeded`` when the owner has no use left: then nothing at all was written.
        """
        now = self.clock.now_ms()
        enqueued, task_id = await tasks.create_planned(
            request,
            lambda task_id: tasks.plan_task(
                self._ingestor, request, now, task_id=task_id, functions=self._planned_from()
            ),
            self.store.create_task,
            self._reload_functions,
        )
        if enqueued is not None:
            return enqueued
        for attempt in range(tasks.STALE_PLANS):  # the general path, under the same check
            async with self.store.transaction() as tx:
                planned_from = self._planned_from()
                last = attempt == tasks.STALE_PLANS - 1
                if last or planned_from is None or await tx.functions_fingerprint() == planned_from:
                    return await tasks.enqueue_stepwise(tx, self._ingestor, request, now, task_id=task_id)
            await self._reload_functions()
        raise AssertionError("unreachable: the last attempt enqueues unchecked")

    async def get_task(self, task_id: str) -> records.TaskRecord | None:
        return await self.store.get_task(task_id)

    async def require_task(self, task_id: str) -> records.TaskRecord:
        task = await self.store.get_task(task_id)
        if task is None:
            raise errors.TaskNotFoundError(f"no task {task_id!r}")
        return task

    async def cancel_task(self, task_id: str) -> records.TaskRecord:
        """Cancel a task that has not ended (its run stops before its next step); returns the task.

        A task that already ended is returned unchanged.
        """
        task = await self.require_task(task_id)
        if task.status.is_terminal:
            return task
        if task.run_id is not None and await self.cancel_run(task.run_id):
            return await self.require_task(task_id)
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            locked = await tx.lock_task(task_id)
            if locked is not None and not locked.status.is_terminal:
                await tasks.cancel_unstarted(tx, locked, now)
        return await self.require_task(task_id)

    async def report_task_progress(self, task_id: str, progress: float, message: str | None = None) -> bool:
        """Record a running task's progress (0.0 to 1.0); False if the task has ended or already
        reported more. ``TaskNotFoundError`` for an unknown task."""
        value, text = tasks.validate_progress(progress, message)
        if await self.store.set_task_progress(task_id, value, text, self.clock.now_ms()):
            return True
        await self.require_task(task_id)
        return False

    async def wait_for_task(self, task_id: str, timeout: float = 30.0) -> records.TaskRecord:
        """Wait until the task is complete, failed or cancelled; ``RunTimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self._run_ended.clear()
            task = await self.require_task(task_id)
            if task.status.is_terminal:
                return task
            if not self._background:
                if await self.run_until_idle() == 0:
                    raise errors.RunTimeoutError(
                        f"task {task_id} is still {task.status.value} and nothing is ready to run: "
                        "advance the clock past its sleeps, retries or pending timeout"
                    )
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.RunTimeoutError(f"task {task_id} is still {task.status.value} after {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_ended.wait(), timeout=min(remaining, self._poll_interval_s))

    async def retry_run(self, run_id: str) -> str:
        """Retry a failed run from its failed step: a new run of the same function with the same
        events, whose successfully recorded steps are copied over and not run again; returns its id."""
        steps = await self.store.list_steps(run_id)
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            original = await tx.lock_run(run_id)
            if original is None:
                raise errors.RunNotFoundError(f"no run {run_id!r}")
            spec = self.registry.get(original.function_id)
            if spec is None:
                raise errors.FunctionNotFoundError(f"function {original.function_id!r} is no longer registered")
            return await retry.retry_run(tx, original, steps, now, spec)

    # internals
    def _note_run_ended(self, run_id: str) -> None:
        self._run_ended.set()

    def _note_task_swept(self, task: records.TaskRecord, reason: str) -> None:
        observe.sweeper_action("failed_pending" if task.run_id is None else "failed_pending_run_cancelled")
        self._run_ended.set()

    async def _sweep_loop(self) -> None:
        assert self._sweeper is not None
        while True:
            try:
                await self._sweeper.sweep_due()
                delay = await self._sweeper.seconds_until_due()
            except Exception:
                logger.exception("sweeping pending tasks failed; retrying")
                delay = sweeper.MAX_IDLE_S
            await asyncio.sleep(max(0.05, delay))

    async def _register_crons(self) -> None:
        assert self._cron is not None
        for app_id in sorted({spec.app_id for spec in self.registry.functions.values()}):
            await self._cron.register(app_id)

    async def _cron_loop(self) -> None:
        assert self._cron is not None
        while True:
            try:
                await self._cron.fire_due()
                next_at = await self._cron.next_due_ms()
            except Exception:
                logger.exception("firing cron schedules failed; retrying")
                next_at = None
            delay = 60.0 if next_at is None else max(0.05, (next_at - self.clock.now_ms()) / 1000)
            await asyncio.sleep(min(delay, 60.0))


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that swallowed the cancellation
    (psycopg_pool can, when it is cancelled while checking a connection)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
