"""``stepline.Engine``: the engine embedded in the user's own process.

::

    engine = stepline.Engine(client, functions=[...], database_url="sqlite:///.stepline/dev.db")
    async with engine:
        ids = await engine.send(stepline.Event(name="ai/tailor.resume", data={...}))
        run = await engine.wait_for_run(ids.run_ids[0], timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from stepline import errors
from stepline.engine import apply as apply_
from stepline.engine import clock as clock_
from stepline.engine import cron as cron_
from stepline.engine import dispatch, executor, ingest, transitions
from stepline.engine import registry as registry_
from stepline.protocol import models
from stepline.sdk import client as client_
from stepline.sdk import events as events_
from stepline.sdk import function as function_
from stepline.storage import open_store, records, store

logger = logging.getLogger("stepline.engine")

DEFAULT_DATABASE_URL = "sqlite:///.stepline/dev.db"


@dataclasses.dataclass(frozen=True, slots=True)
class SendResult:
    event_ids: list[str]
    """Ids of the accepted events, in the order sent."""
    run_ids: list[str]
    """Runs the events started."""


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    id: str
    """Hashed step id."""
    name: str
    kind: str
    output: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: int
    ended_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    id: str
    function_id: str
    status: records.RunStatus
    output: Any
    error: dict[str, Any] | None
    event: dict[str, Any]
    steps: list[Step]
    created_at: int
    started_at: int | None
    ended_at: int | None

    @classmethod
    def from_records(cls, run: records.RunRecord, steps: Sequence[records.StepRecord]) -> Run:
        return cls(
            id=run.id,
            function_id=run.function_id,
            status=run.status,
            output=run.output,
            error=run.error,
            event=run.events[0] if run.events else {},
            steps=[_step_view(step) for step in steps],
            created_at=run.created_at,
            started_at=run.started_at,
            ended_at=run.ended_at,
        )


def _step_view(step: records.StepRecord) -> Step:
    result = step.result
    error = result.get("error") if isinstance(result, dict) and set(result) == {"error"} else None
    output = result.get("data") if isinstance(result, dict) and set(result) <= {"data"} else result
    return Step(
        step.step_id,
        step.name,
        step.kind,
        None if error else output,
        error,
        step.attempts,
        step.started_at,
        step.ended_at,
    )


class Engine:
    """Runs ``functions`` durably inside this process on ``database_url`` (SQLite or PostgreSQL).

    ``concurrency`` bounds calls in flight; ``lease`` is how long a claimed item stays
    exclusive without a heartbeat; ``poll_interval`` is the fallback scan period (wake-ups
    are immediate in-process and through ``LISTEN/NOTIFY`` on PostgreSQL).
    """

    def __init__(
        self,
        client: client_.Stepline,
        functions: Iterable[function_.Function | Any],
        database_url: str = DEFAULT_DATABASE_URL,
        *,
        concurrency: int = 32,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(seconds=1),
        pool_size: int = 10,
        checkpointing: bool = True,
        clock: clock_.Clock | None = None,
        background: bool = True,
    ) -> None:
        if concurrency < 1:
            raise errors.ConfigurationError(f"concurrency must be at least 1 (got {concurrency})")
        if lease < timedelta(seconds=1):
            raise errors.ConfigurationError(f"lease must be at least 1 second (got {lease})")
        self.client = client
        specs, self._local_functions = registry_.specs_for(functions)
        self.registry = registry_.Registry(specs)
        for fn in self._local_functions.values():
            if fn.app_id != client.app_id:
                raise errors.ConfigurationError(
                    f"function {fn.id!r} belongs to app {fn.app_id!r}, not to this client's app {client.app_id!r}"
                )
        self.database_url = database_url
        self.clock: clock_.Clock = clock or clock_.SystemClock()
        self._concurrency = concurrency
        self._lease_ms = int(lease.total_seconds() * 1000)
        self._poll_interval_s = poll_interval.total_seconds()
        self._pool_size = pool_size
        self._checkpointing = checkpointing
        self._background = background
        self._db: store.Store | None = None
        self._executor: executor.Executor | None = None
        self._cron: cron_.CronScheduler | None = None
        self._ingestor = ingest.Ingestor(self.registry)
        self._tasks: list[asyncio.Task[None]] = []
        self._run_ended = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the database, register functions and (unless ``background=False``) start executing."""
        if self._db is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._db = await open_store(self.database_url, pool_size=self._pool_size)
        try:
            await self._register_functions()
        except BaseException:
            await self._db.close()
            self._db = None
            raise
        applier = apply_.Applier(self._db, self.registry, self._ingestor, self.clock, lease_ms=self._lease_ms)
        self._executor = executor.Executor(
            self._db,
            self.registry,
            applier,
            dispatch.InProcessTransport(self.client, self._local_functions),
            self.clock,
            concurrency=self._concurrency,
            lease_ms=self._lease_ms,
            poll_interval_s=self._poll_interval_s,
            on_run_ended=self._note_run_ended,
            checkpointing=self._checkpointing,
        )
        self._cron = cron_.CronScheduler(self._db, self.registry, self._ingestor, self.clock)
        await self._cron.register(self.client.app_id)
        self.client.attach_sender(_EngineSender(self))
        if self._background:
            self._tasks = [
                asyncio.create_task(self._executor.run_forever(), name="stepline-executor"),
                asyncio.create_task(self._cron_loop(), name="stepline-cron"),
            ]

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Stop executing (in-flight calls get ``grace`` to finish) and close the database."""
        if self._db is None:
            return
        if self._executor is not None:
            await self._executor.stop(grace.total_seconds())
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.client.attach_sender(None)
        await self._db.close()
        self._db = None

    @property
    def store(self) -> store.Store:
        if self._db is None:
            raise errors.ConfigurationError(
                "the engine is not started: use 'async with engine:' or await engine.start()"
            )
        return self._db

    # events
    async def send(self, events: events_.Event | Sequence[events_.Event]) -> SendResult:
        """Accept events (stored with the runs they start, atomically); returns their ids and run ids."""
        batch = [events] if isinstance(events, events_.Event) else list(events)
        wire = []
        for event in batch:
            if not isinstance(event, events_.Event):
                raise errors.ConfigurationError(f"send() takes stepline.Event objects, got {type(event).__name__}")
            events_.validate_event_name(event.name)
            wire.append(event.to_wire())
        result = await self.send_wire(wire)
        return SendResult(result.event_ids, result.run_ids)

    async def send_wire(self, wire: list[dict[str, Any]]) -> ingest.IngestResult:
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            return await self._ingestor.ingest(tx, wire, now)

    # runs
    async def get_run(self, run_id: str) -> Run | None:
        run = await self.store.get_run(run_id)
        if run is None:
            return None
        return Run.from_records(run, await self.store.list_steps(run_id))

    async def wait_for_run(self, run_id: str, timeout: float = 30.0) -> Run:
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
        self._note_run_ended(run_id)
        return True

    async def run_until_idle(self) -> int:
        """Fire due crons and process every ready item until nothing is ready; returns items processed."""
        if self._executor is None or self._cron is None:
            raise errors.ConfigurationError("the engine is not started")
        processed = 0
        while True:
            fired = await self._cron.fire_due()
            done = await self._executor.run_until_idle()
            processed += done
            if not fired and done == 0:
                return processed

    # internals
    def _note_run_ended(self, run_id: str) -> None:
        self._run_ended.set()

    async def _register_functions(self) -> None:
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            for spec in self.registry.functions.values():
                await tx.upsert_function(records.FunctionRecord(spec.id, spec.app_id, spec.name, spec.config, now))

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


class _EngineSender:
    """Delivers ``client.send`` to the engine's ingest, from the loop or a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        return (await self._engine.send_wire(events)).event_ids

    def send_events_sync(self, events: list[dict[str, Any]]) -> list[str]:
        loop = self._engine._loop  # the sender is the engine's own helper
        if loop is None:
            raise errors.ConfigurationError("the engine is not started")
        return asyncio.run_coroutine_threadsafe(self.send_events(events), loop).result()
