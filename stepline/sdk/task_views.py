"""The poll, stream and cancel routes of ``task_routes``, for any web framework.

``stepline.fastapi.task_routes`` (async) and the synchronous ``stepline.flask.task_routes`` and
``stepline.django.task_routes`` answer the same three routes the same way: the caller's own
task as JSON, its changes as server-sent events, its cancellation; a task the caller does not
own answered exactly like one that does not exist (404), so ids cannot be probed; 503 while
Stepline cannot be reached. This module holds what they share; the synchronous views answer
with an ``Answer`` each adapter turns into its framework's response.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Generator, Mapping
from typing import Any

from stepline import errors
from stepline.protocol import sse
from stepline.sdk import client as client_
from stepline.sdk import tasks as tasks_

logger = logging.getLogger("stepline.tasks")

UNAVAILABLE = "the task service is unavailable right now, please retry"
UNAUTHENTICATED = "sign in to see your tasks"
JSON_TYPE = "application/json"


def owner_id(caller: Any) -> str | None:
    """The owner id the app's ``owner`` resolved to: a string or a whole number, or an object's
    ``id`` (your ``User``; ``pk`` for a Django model keyed otherwise); None when nobody is signed
    in (None, an empty id, or Django's anonymous user)."""
    if caller is None or isinstance(caller, bool):
        return None if caller is None else _not_an_owner(caller)
    if isinstance(caller, str | int):
        return str(caller) if caller != "" else None
    if getattr(caller, "is_authenticated", True) is False:
        return None
    for attribute in ("id", "pk"):
        if hasattr(caller, attribute):
            identity = getattr(caller, attribute)
            return None if identity is None or identity == "" else str(identity)
    return _not_an_owner(caller)


def _not_an_owner(caller: object) -> str:
    raise TypeError(
        "task_routes(owner=...) must resolve to the caller's owner id (a string or number) or an object "
        f"with an 'id', not {type(caller).__name__}"
    )


def not_found_body(task_id: str) -> dict[str, Any]:
    return {"error": f"no task {task_id!r}", "status": 404}


def stream_frame(task: tasks_.Task) -> bytes:
    """One task change as a frame; its id is the version, which a reconnecting browser sends
    back as ``Last-Event-ID``."""
    return sse.frame("task", task.to_wire(), task.version)


def saw_the_end(task: tasks_.Task, seen: int | None) -> bool:
    """``sse.has_the_end`` for an SDK ``Task``."""
    return sse.has_the_end(seen, task.version, task.is_terminal)


def route_path(prefix: str, tail: str) -> str:
    """``prefix`` (with or without slashes, or empty) and ``tail`` joined with one slash."""
    base = prefix.strip("/")
    return f"{base}/{tail}" if base else tail


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A response, framework-neutral: a JSON ``body``, or server-sent event ``frames``, or
    neither (204)."""

    status: int
    body: dict[str, Any] | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    frames: Generator[bytes, None, None] | None = None

    @property
    def content(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()

    @property
    def media_type(self) -> str | None:
        if self.frames is not None:
            return sse.MEDIA_TYPE
        return None if self.body is None else JSON_TYPE


def method_not_allowed(method: str, allowed: str) -> Answer:
    body = {"error": f"method {method} is not allowed here (only {allowed})", "status": 405}
    return Answer(405, body, {"Allow": allowed})


class SyncTaskViews:
    """The three routes over ``client.tasks``' synchronous calls, for WSGI frameworks.

    ``caller`` is what the app's ``owner`` returned for the request (see ``owner_id``).
    """

    def __init__(self, client: client_.Stepline) -> None:
        self._client = client

    def get(self, task_id: str, caller: Any) -> Answer:
        return self._guarded(task_id, caller, lambda task: Answer(200, task.to_wire()))

    def stream(self, task_id: str, caller: Any, last_event_id: str | None) -> Answer:
        try:
            seen = sse.last_event_version(last_event_id)
        except ValueError as exc:
            return Answer(400, {"error": str(exc), "status": 400})

        def answer(task: tasks_.Task) -> Answer:
            if saw_the_end(task, seen):
                return Answer(204)
            return Answer(200, headers=sse.HEADERS, frames=self._frames(task.id, seen))

        return self._guarded(task_id, caller, answer)

    def cancel(self, task_id: str, caller: Any) -> Answer:
        return self._guarded(
            task_id, caller, lambda task: Answer(200, self._client.tasks.cancel_sync(task.id).to_wire())
        )

    def _frames(self, task_id: str, seen: int | None) -> Generator[bytes, None, None]:
        changes = self._client.tasks.watch_sync(task_id, after_version=seen)
        try:
            for change in changes:
                # A keep-alive when quiet: writing it is how the server learns the browser left.
                yield sse.KEEPALIVE if change is None else stream_frame(change)
        except errors.SteplineError as exc:
            # The answer has started: all that is left is to end it; the browser reconnects.
            logger.warning("task stream %s ended early: %s", task_id, exc)
        finally:
            changes.close()

    def _guarded(self, task_id: str, caller: Any, answer: Callable[[tasks_.Task], Answer]) -> Answer:
        """``answer`` for the caller's own task; otherwise 401, 404 or 503 as JSON."""
        owner = owner_id(caller)
        if owner is None:
            return Answer(401, {"error": UNAUTHENTICATED, "status": 401})
        try:
            task = self._client.tasks.get_sync(task_id)
            if task is None or task.owner != owner:
                return Answer(404, not_found_body(task_id))
            return answer(task)
        except errors.TaskNotFoundError:  # gone between the read and the cancel (retention)
            return Answer(404, not_found_body(task_id))
        except (errors.EventSendError, errors.StorageError) as exc:
            logger.warning("task route: Stepline is unavailable: %s", exc)
            return Answer(503, {"error": UNAVAILABLE, "status": 503}, {"Retry-After": "1"})
