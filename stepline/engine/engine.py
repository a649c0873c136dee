"""``stepline.Engine``: the engine embedded in the user's own process.

::

    engine = stepline.Engine(client, functions=[...], database_url="sqlite:///.stepline/dev.db")
    async with engine:
        ids = await engine.send(stepline.Event(name="ai/tailor.resume", data={...}))
        run = await engine.wait_for_run(ids.run_ids[0], timeout=30)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from stepline import errors
from stepline.engine import clock as clock_
from stepline.engine import core, dispatch, task_stream, tasks, views
from stepline.engine import registry as registry_
from stepline.sdk import client as client_
from stepline.sdk import events as events_
from stepline.sdk import function as function_
from stepline.storage import records

DEFAULT_DATABASE_URL = "sqlite:///.stepline/dev.db"

STREAM_POLL_S = 0.1
"""How often an embedded task stream reads the change log (in process: cheaper than the server's)."""
MAX_TASK_PAGE = 500
T = TypeVar("T")

Run = views.Run
Step = views.Step
SendResult = views.SendResult


class Engine(core.EngineCore):
    """Runs ``functions`` of ``client`` durably inside this process (see ``EngineCore`` for options)."""

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
        specs, self._local_functions = registry_.specs_for(functions)
        for fn in self._local_functions.values():
            if fn.app_id != client.app_id:
                raise errors.ConfigurationError(
                    f"function {fn.id!r} belongs to app {fn.app_id!r}, not to this client's app {client.app_id!r}"
                )
        super().__init__(
            registry_.Registry(specs),
            database_url,
            concurrency=concurrency,
            lease=lease,
            poll_interval=poll_interval,
            pool_size=pool_size,
            checkpointing=checkpointing,
            clock=clock,
            background=background,
        )
        self.client = client

    def _transport(self) -> dispatch.Transport:
        return dispatch.InProcessTransport(self.client, self._local_functions)

    async def _on_open(self) -> None:
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            for spec in self.registry.functions.values():
                await tx.upsert_function(records.FunctionRecord(spec.id, spec.app_id, spec.name, spec.config, now))
        link = _EngineLink(self)
        self.client.attach_sender(link, link)

    async def _on_close(self) -> None:
        self.client.attach_sender(None)

    async def send(self, events: events_.Event | Sequence[events_.Event]) -> views.SendResult:
        """Accept events (stored with the runs they start, atomically); returns their ids and run ids."""
        batch = [events] if isinstance(events, events_.Event) else list(events)
        wire = []
        for event in batch:
            if not isinstance(event, events_.Event):
                raise errors.ConfigurationError(f"send() takes stepline.Event objects, got {type(event).__name__}")
            events_.validate_event_name(event.name)
            wire.append(event.to_wire())
        result = await self.send_wire(wire)
        return views.SendResult(result.event_ids, result.run_ids)


class _EngineLink:
    """Delivers ``client.send`` and ``client.tasks`` to this engine, from the loop or a worker
    thread (sync functions and sync routes call the ``*_sync`` twins)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _on_loop(self, call: Coroutine[Any, Any, T]) -> T:
        loop = self._engine._loop  # the link is the engine's own helper
        if loop is None:
            call.close()
            raise errors.ConfigurationError("the engine is not started")
        return asyncio.run_coroutine_threadsafe(call, loop).result()

    async def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        return (await self._engine.send_wire(events)).event_ids

    def send_events_sync(self, events: list[dict[str, Any]]) -> list[str]:
        return self._on_loop(self.send_events(events))

    async def enqueue_task(self, body: dict[str, Any]) -> dict[str, Any]:
        enqueued = await self._engine.enqueue_task(tasks.request_from_body(body))
        return tasks.task_body(enqueued.task)

    def enqueue_task_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._on_loop(self.enqueue_task(body))

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        task = await self._engine.get_task(task_id)
        return None if task is None else tasks.task_body(task)

    def get_task_sync(self, task_id: str) -> dict[str, Any] | None:
        return self._on_loop(self.get_task(task_id))

    async def list_tasks(self, owner: str | None, status: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TASK_PAGE:
            raise errors.ConfigurationError(f"limit must be a whole number from 1 to {MAX_TASK_PAGE} (got {limit!r})")
        try:
            wanted = None if status is None else records.TaskStatus(status)
        except ValueError:
            allowed = ", ".join(item.value for item in records.TaskStatus)
            raise errors.ConfigurationError(f"status must be one of {allowed} (got {status!r})") from None
        return await tasks.page_body(self._engine.store, owner=owner, status=wanted, cursor=cursor, limit=limit)

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        return tasks.task_body(await self._engine.cancel_task(task_id))

    async def report_progress(self, task_id: str, progress: float, message: str | None) -> bool:
        return await self._engine.report_task_progress(task_id, progress, message)

    def report_progress_sync(self, task_id: str, progress: float, message: str | None) -> bool:
        return self._on_loop(self.report_progress(task_id, progress, message))

    async def stream_task(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        task = await self._engine.require_task(task_id)
        yield tasks.task_body(task)
        async for change in task_stream.follow(self._engine.store, task, STREAM_POLL_S):
            if change is not None:
                yield tasks.task_body(change)
