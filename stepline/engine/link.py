"""``client.send`` and ``client.tasks`` answered by an engine running in this process.

The embedded ``Engine`` attaches a ``ClientLink`` to its client when it starts, and so does a
process that only enqueues (``engine.direct``): the SDK's calls then become the engine's own
operations, with no HTTP in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

from stepline import errors
from stepline.engine import core, task_stream, tasks, threadsafe
from stepline.protocol import sse
from stepline.storage import records

STREAM_POLL_S = 0.1
"""How often a task stream in this process reads the change log (cheaper than the server's)."""
MAX_TASK_PAGE = 500
T = TypeVar("T")


class ClientLink:
    """Delivers ``client.send`` and ``client.tasks`` to an engine in this process, from its loop
    or a worker thread (sync functions and sync routes call the ``*_sync`` twins)."""

    def __init__(self, engine: core.EngineCore, *, stream_poll_s: float = STREAM_POLL_S) -> None:
        self._engine = engine
        self._stream_poll_s = stream_poll_s

    def _on_loop(self, call: Coroutine[Any, Any, T]) -> T:
        loop = self._engine.loop
        if loop is None:
            call.close()
            raise errors.ConfigurationError("the engine is not started")
        with contextlib.suppress(RuntimeError):  # no loop runs in this thread: the usual case
            if asyncio.get_running_loop() is loop:
                call.close()
                raise errors.ConfigurationError(
                    "a *_sync call was made on the event loop's own thread, where it would wait for "
                    "itself forever: await the async method instead"
                )
        if self._engine.forked:
            call.close()
            raise errors.ConfigurationError(core.FORKED)
        with self._answering():
            return threadsafe.wait_on(loop, call)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Around each call: how a database failure reaches the caller (as it is, by default)."""
        yield

    async def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        return (await self._engine.send_wire(events)).event_ids

    def send_events_sync(self, events: list[dict[str, Any]]) -> list[str]:
        return self._on_loop(self.send_events(events))

    async def enqueue_task(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._answering():
            enqueued = await self._engine.enqueue_task(tasks.request_from_body(body))
        return tasks.task_body(enqueued.task)

    def enqueue_task_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._on_loop(self.enqueue_task(body))

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        with self._answering():
            task = await self._engine.get_task(task_id)
        return None if task is None else tasks.task_body(task)

    def get_task_sync(self, task_id: str) -> dict[str, Any] | None:
        return self._on_loop(self.get_task(task_id))

    async def list_tasks(
        self, owner: str | None, status: str | None, cursor: str | None, limit: int, *, kind: str | None = None
    ) -> dict[str, Any]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TASK_PAGE:
            raise errors.ConfigurationError(f"limit must be a whole number from 1 to {MAX_TASK_PAGE} (got {limit!r})")
        try:
            wanted = None if status is None else records.TaskStatus(status)
        except ValueError:
            allowed = ", ".join(item.value for item in records.TaskStatus)
            raise errors.ConfigurationError(f"status must be one of {allowed} (got {status!r})") from None
        with self._answering():
            return await tasks.page_body(
                self._engine.store, owner=owner, status=wanted, cursor=cursor, limit=limit, kind=kind
            )

    def list_tasks_sync(
        self, owner: str | None, status: str | None, cursor: str | None, limit: int, *, kind: str | None = None
    ) -> dict[str, Any]:
        return self._on_loop(self.list_tasks(owner, status, cursor, limit, kind=kind))

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        with self._answering():
            return tasks.task_body(await self._engine.cancel_task(task_id))

    def cancel_task_sync(self, task_id: str) -> dict[str, Any]:
        return self._on_loop(self.cancel_task(task_id))

    async def report_progress(self, task_id: str, progress: float, message: str | None) -> bool:
        with self._answering():
            return await self._engine.report_task_progress(task_id, progress, message)

    def report_progress_sync(self, task_id: str, progress: float, message: str | None) -> bool:
        return self._on_loop(self.report_progress(task_id, progress, message))

    async def stream_task(
        self, task_id: str, after_version: int | None = None, *, ticks: bool = False
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """The stream's task bodies; with ``ticks``, None whenever ``sse.KEEPALIVE_S`` pass
        without one (a web route then writes a keep-alive)."""
        task = await self._engine.require_task(task_id)
        quiet_since = time.monotonic()
        async for change in task_stream.stream(self._engine.store, task, after_version, self._stream_poll_s):
            if change is not None:
                quiet_since = time.monotonic()
                yield tasks.task_body(change)
            elif ticks and time.monotonic() - quiet_since >= sse.KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield None

    def stream_task_sync(
        self, task_id: str, after_version: int | None = None, *, ticks: bool = False
    ) -> Iterator[dict[str, Any] | None]:
        """``stream_task`` from a worker thread: each change is read on the engine's loop. Closing
        this generator early (a browser went away) closes the stream there too."""
        changes = self.stream_task(task_id, after_version, ticks=ticks)

        async def following() -> dict[str, Any] | _End | None:
            return await anext(changes, _END)

        try:
            while not isinstance(change := self._on_loop(following()), _End):
                yield change
        finally:
            loop = self._engine.loop
            if loop is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(changes.aclose(), loop)


class _End:
    """The end of a stream, told apart from its ticks (None)."""


_END = _End()
