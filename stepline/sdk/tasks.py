"""Tracked tasks in the SDK: ``client.tasks.enqueue(...)``, ``stepline.Quota``, ``ctx.task``.

A route enqueues a task (the task row, its event and its runs are written in one transaction by
the server or the embedded engine) and answers ``202`` with the task id; the client polls or
streams the task until it is ``complete``, ``failed`` or ``cancelled``. Where the calls go is a
``TaskBackend``: the server over HTTP by default, or the embedded ``Engine`` when one is
started with this client.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import ulid

from stepline import errors
from stepline.protocol import durations, ids
from stepline.sdk import events as events_

if TYPE_CHECKING:
    from stepline.sdk import client as client_

logger = logging.getLogger("stepline.tasks")

TERMINAL = frozenset({"complete", "failed", "cancelled"})
MAX_QUOTA_WINDOW = timedelta(days=366)


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    """At most ``limit`` tasks of ``feature`` per owner per ``window``, checked in the enqueue's
    own transaction (so concurrent enqueues never exceed it).

    ``window`` is a ``timedelta``, seconds, or a time string (``"1d"``). With
    ``refund_on_failure=True`` a task that fails gives its use back.
    """

    feature: str
    limit: int
    window: timedelta | float | str
    """Always a ``timedelta`` once built (seconds and time strings are converted)."""
    refund_on_failure: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not self.feature.strip() or len(self.feature) > 200:
            raise errors.ConfigurationError("Quota(feature=...) must be a non-empty string of at most 200 characters")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise errors.ConfigurationError(
                f"Quota(limit=...) must be a whole number of at least 1 (got {self.limit!r})"
            )
        window: object = self.window
        if not isinstance(window, timedelta):
            if not isinstance(window, int | float | str) or isinstance(window, bool):
                raise errors.ConfigurationError(
                    f"Quota(window=...) must be a timedelta, seconds or a time string like '1d' (got {window!r})"
                )
            try:
                window = timedelta(milliseconds=durations.to_milliseconds(window))
            except errors.ConfigurationError as exc:
                raise errors.ConfigurationError(f"Quota(window=...): {exc}") from None
            object.__setattr__(self, "window", window)
        if not timedelta(seconds=1) <= window <= MAX_QUOTA_WINDOW:
            raise errors.ConfigurationError(f"Quota(window=...) must be from 1 second to 366 days (got {window})")

    def to_wire(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "limit": self.limit,
            "window": durations.format_duration_ms(durations.to_milliseconds(self.window)),
            "refund_on_failure": self.refund_on_failure,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """A task as its client sees it. Times are epoch milliseconds."""

    id: str
    kind: str
    owner: str
    status: str
    """``pending``, ``running``, ``complete``, ``failed`` or ``cancelled``."""
    progress: float | None
    message: str | None
    """The last progress message."""
    result: Any
    """The function's return value, once ``complete``."""
    error: dict[str, Any] | None
    """``{"name", "message"}`` once ``failed`` or ``cancelled``; ``message`` is the reason to show."""
    run_id: str | None
    created_at: int
    updated_at: int
    started_at: int | None
    ended_at: int | None
    version: int
    """Incremented by every change."""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def reason(self) -> str | None:
        """Why the task failed or was cancelled, for a UI."""
        return None if self.error is None else str(self.error.get("message") or "")

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Task:
        try:
            return cls(
                id=str(body["id"]),
                kind=str(body["kind"]),
                owner=str(body["owner"]),
                status=str(body["status"]),
                progress=body.get("progress"),
                message=body.get("message"),
                result=body.get("result"),
                error=body.get("error"),
                run_id=body.get("run_id"),
                created_at=int(body["created_at"]),
                updated_at=int(body["updated_at"]),
                started_at=body.get("started_at"),
                ended_at=body.get("ended_at"),
                version=int(body.get("version", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.EventSendError(f"the server's task answer is missing {exc}: {body!r:.200}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[Task]
    """Newest first."""
    cursor: str | None
    """Pass to ``list(cursor=...)`` for the next page; None on the last page."""

    @classmethod
    def from_wire(cls, page: dict[str, Any]) -> TaskPage:
        """A page as ``GET /v1/tasks`` answers it."""
        return cls([Task.from_wire(item) for item in page.get("data") or []], page.get("cursor"))


class TaskBackend(Protocol):
    """Where ``client.tasks`` calls go. Bodies are the JSON of the HTTP API (``/v1/tasks``)."""

    async def enqueue_task(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def enqueue_task_sync(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def get_task(self, task_id: str) -> dict[str, Any] | None: ...

    def get_task_sync(self, task_id: str) -> dict[str, Any] | None: ...

    async def list_tasks(
        self, owner: str | None, status: str | None, cursor: str | None, limit: int, *, kind: str | None = None
    ) -> dict[str, Any]:
        """``{"data": [task, ...], "cursor": str | None}``. ``kind`` is passed only when given:
        a backend written before it existed still lists."""
        ...

    def list_tasks_sync(
        self, owner: str | None, status: str | None, cursor: str | None, limit: int, *, kind: str | None = None
    ) -> dict[str, Any]: ...

    async def cancel_task(self, task_id: str) -> dict[str, Any]: ...

    def cancel_task_sync(self, task_id: str) -> dict[str, Any]: ...

    async def report_progress(self, task_id: str, progress: float, message: str | None) -> bool: ...

    def report_progress_sync(self, task_id: str, progress: float, message: str | None) -> bool: ...

    def stream_task(
        self, task_id: str, after_version: int | None = None, *, ticks: bool = False
    ) -> AsyncIterator[dict[str, Any] | None]:
        """The task now, then at every change, ending after a terminal state. With
        ``after_version``, the changes after that version instead of the task now (see
        ``TaskClient.stream``); with ``ticks``, also None whenever about ``sse.KEEPALIVE_S``
        pass without a change (only ``TaskClient.watch`` asks for them)."""
        ...

    def stream_task_sync(
        self, task_id: str, after_version: int | None = None, *, ticks: bool = False
    ) -> Iterator[dict[str, Any] | None]:
        """``stream_task`` for synchronous code; with ``ticks``, also None whenever about
        ``sse.KEEPALIVE_S`` pass without a change."""
        ...


class TaskClient:
    """``client.tasks``: enqueue tasks and read them, from routes and from any code."""

    def __init__(self, backend: Callable[[], TaskBackend]) -> None:
        self._backend = backend

    async def enqueue(
        self,
        *,
        kind: str,
        owner: str,
        event: events_.Event,
        quota: Quota | None = None,
        pending_timeout: timedelta | float | str | None = None,
        id: str | None = None,
    ) -> Task:
        """Create a task (``pending``) with its event and runs in one transaction; returns it.

        Raises ``QuotaExceeded`` (nothing written) when ``owner`` used up ``quota``. A task not
        started within ``pending_timeout`` (default 10 minutes) is failed with the reason.
        """
        body = enqueue_body(kind=kind, owner=owner, event=event, quota=quota, pending_timeout=pending_timeout, id=id)
        return Task.from_wire(await self._backend().enqueue_task(body))

    def enqueue_sync(
        self,
        *,
        kind: str,
        owner: str,
        event: events_.Event,
        quota: Quota | None = None,
        pending_timeout: timedelta | float | str | None = None,
        id: str | None = None,
    ) -> Task:
        """``enqueue`` for synchronous code (Flask, Django views)."""
        body = enqueue_body(kind=kind, owner=owner, event=event, quota=quota, pending_timeout=pending_timeout, id=id)
        return Task.from_wire(self._backend().enqueue_task_sync(body))

    async def get(self, task_id: str) -> Task | None:
        body = await self._backend().get_task(ids.canonical(task_id))
        return None if body is None else Task.from_wire(body)

    def get_sync(self, task_id: str) -> Task | None:
        body = self._backend().get_task_sync(ids.canonical(task_id))
        return None if body is None else Task.from_wire(body)

    async def list(
        self,
        *,
        owner: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """A page of tasks, newest first: of ``owner``, in ``status``, of ``kind`` (each when given)."""
        return TaskPage.from_wire(await self._backend().list_tasks(owner, status, cursor, limit, **_kind_filter(kind)))

    def list_sync(
        self,
        *,
        owner: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """``list`` for synchronous code."""
        return TaskPage.from_wire(self._backend().list_tasks_sync(owner, status, cursor, limit, **_kind_filter(kind)))

    async def cancel(self, task_id: str) -> Task:
        """Cancel the task's run (it stops before its next step); an ended task comes back unchanged."""
        return Task.from_wire(await self._backend().cancel_task(ids.canonical(task_id)))

    def cancel_sync(self, task_id: str) -> Task:
        """``cancel`` for synchronous code."""
        return Task.from_wire(self._backend().cancel_task_sync(ids.canonical(task_id)))

    async def stream(self, task_id: str, *, after_version: int | None = None) -> AsyncIterator[Task]:
        """The task now, then at every change, until it is complete, failed or cancelled.

        ``after_version`` resumes a stream whose last task had that ``version`` (a reconnecting
        browser's ``Last-Event-ID``): every change since, or the task now if the changes are no
        longer kept (a few minutes), and nothing at all if that version was the task's last.
        """
        _check_after_version(after_version)
        backend, task_id = self._backend(), ids.canonical(task_id)
        # Without after_version, called as before it existed: a backend of an older shape still works.
        bodies = (
            backend.stream_task(task_id)
            if after_version is None
            else backend.stream_task(task_id, after_version=after_version)
        )
        async for body in bodies:
            if body is not None:
                yield Task.from_wire(body)

    async def watch(self, task_id: str, *, after_version: int | None = None) -> AsyncIterator[Task | None]:
        """``stream`` for web routes: also None whenever about 15 s pass without a change, so
        that the route writes a keep-alive (proxies cut quiet connections)."""
        _check_after_version(after_version)
        backend, task_id = self._backend(), ids.canonical(task_id)
        try:
            bodies = backend.stream_task(task_id, after_version=after_version, ticks=True)
        except TypeError:  # a backend written before ticks (and maybe after_version): no keep-alives
            async for task in self.stream(task_id, after_version=after_version):
                yield task
            return
        async for body in bodies:
            yield None if body is None else Task.from_wire(body)

    def stream_sync(self, task_id: str, *, after_version: int | None = None) -> Generator[Task, None, None]:
        """``stream`` for synchronous code (a Flask or Django view): a generator that blocks its
        thread until the next change. Close it (or let it end) to stop following the task."""
        for task in self.watch_sync(task_id, after_version=after_version):
            if task is not None:
                yield task

    def watch_sync(self, task_id: str, *, after_version: int | None = None) -> Generator[Task | None, None, None]:
        """``stream_sync`` for web routes: also None whenever about 15 s pass without a change, so
        that the route writes a keep-alive (which proxies need, and which is how a WSGI server
        learns that the browser went away: it fails to write it)."""
        _check_after_version(after_version)
        bodies = self._backend().stream_task_sync(ids.canonical(task_id), after_version=after_version, ticks=True)
        try:
            for body in bodies:
                yield None if body is None else Task.from_wire(body)
        finally:
            close = getattr(bodies, "close", None)  # release the stream now, not when collected
            if close is not None:
                close()


def _kind_filter(kind: object) -> dict[str, str]:
    """``kind=`` for the backend, only when given (a ``TaskBackend`` older than it still lists)."""
    if kind is None:
        return {}
    if not isinstance(kind, str) or not kind:
        raise errors.ConfigurationError(f"tasks.list(kind=...) must be a non-empty string (got {kind!r})")
    return {"kind": kind}


def _check_after_version(after_version: object) -> None:
    if after_version is not None and (
        not isinstance(after_version, int) or isinstance(after_version, bool) or after_version < 0
    ):
        raise errors.ConfigurationError(f"after_version must be a task version (0 or more), got {after_version!r}")


def enqueue_body(
    *,
    kind: str,
    owner: str,
    event: events_.Event,
    quota: Quota | None,
    pending_timeout: timedelta | float | str | None,
    id: str | None,
) -> dict[str, Any]:
    """The ``POST /v1/tasks`` body, checked here so that mistakes surface in the route, not the server."""
    if not isinstance(kind, str) or not kind.strip():
        raise errors.ConfigurationError("tasks.enqueue(kind=...) must be a non-empty string")
    if not isinstance(owner, str) or not owner:
        raise errors.ConfigurationError("tasks.enqueue(owner=...) must be a non-empty string (the user's id)")
    if not isinstance(event, events_.Event):
        raise errors.ConfigurationError(f"tasks.enqueue(event=...) takes a stepline.Event, got {type(event).__name__}")
    events_.validate_event_name(event.name)
    if quota is not None and not isinstance(quota, Quota):
        raise errors.ConfigurationError(f"tasks.enqueue(quota=...) takes a stepline.Quota, got {type(quota).__name__}")
    body: dict[str, Any] = {
        "id": id or str(ulid.ULID()),  # chosen here: a retried request finds the task it created
        "kind": kind,
        "owner": owner,
        "event": event.to_wire(),
    }
    if quota is not None:
        body["quota"] = quota.to_wire()
    if pending_timeout is not None:
        body["pending_timeout"] = durations.format_duration_ms(durations.to_milliseconds(pending_timeout))
    return body


class TaskHandle:
    """``ctx.task`` in ``async`` functions: the task this run drives (``id`` is None if none)."""

    def __init__(self, task_id: str | None, client: client_.Stepline, replaying: Callable[[], bool]) -> None:
        self.id = task_id
        self._client = client
        self._replaying = replaying

    async def progress(self, value: float, message: str | None = None) -> None:
        """Report progress (0.0 to 1.0) and an optional message, visible to pollers at once.

        Best effort: a report that cannot be delivered is logged, not raised. Calls made while
        the function replays recorded steps are skipped, and progress never moves backwards.
        """
        if self.id is None or self._replaying():
            return
        _check_progress(value, message)
        try:
            await self._client.task_backend().report_progress(self.id, float(value), message)
        except errors.SteplineError as exc:
            logger.warning("could not report progress of task %s: %s", self.id, exc)


class TaskHandleSync:
    """``ctx.task`` in plain ``def`` functions."""

    def __init__(self, task_id: str | None, client: client_.Stepline, replaying: Callable[[], bool]) -> None:
        self.id = task_id
        self._client = client
        self._replaying = replaying

    def progress(self, value: float, message: str | None = None) -> None:
        """Report progress (0.0 to 1.0); see ``TaskHandle.progress``."""
        if self.id is None or self._replaying():
            return
        _check_progress(value, message)
        try:
            self._client.task_backend().report_progress_sync(self.id, float(value), message)
        except errors.SteplineError as exc:
            logger.warning("could not report progress of task %s: %s", self.id, exc)


def _check_progress(value: object, message: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise errors.ConfigurationError(f"ctx.task.progress() takes a number from 0.0 to 1.0 (got {value!r})")
    if message is not None and not isinstance(message, str):
        raise errors.ConfigurationError("ctx.task.progress(message=...) must be a string")
