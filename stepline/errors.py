"""Stepline's one exception tree.

::

    SteplineError
    ├── ConfigurationError          bad function definition or engine setting (raised at definition time)
    │   └── ExpressionError         a CEL expression that does not compile
    ├── StorageError                the database could not be reached or answered unexpectedly
    │   └── MigrationError          the schema could not be brought up to date
    ├── SerializationError          a value that must cross the wire is not JSON-serialisable
    ├── FunctionNotFoundError       no registered function has that id
    ├── RunNotFoundError            no run has that id
    ├── RunTimeoutError             wait_for_run gave up before the run ended
    ├── TaskNotFoundError           no task has that id (or the caller does not own it)
    ├── TaskConflictError           a task id was reused for a different task
    ├── QuotaExceeded               enqueue refused: the owner used up the feature's quota
    ├── RunStateError               the run is not in a state that allows the action (retry a run that did not fail)
    ├── EventSendError              the server refused events sent over HTTP, or could not be reached
    ├── NonDeterminismError         a function changed its steps between calls
    ├── NonRetriableError           raised by users: fail the step (or run) now, no retries
    ├── RetryAfterError             raised by users: retry, but not before the given delay
    └── StepError                   a step failed for good; raised inside the function on replay

Control flow inside the replay engine uses ``*Interrupt`` classes derived from
``BaseException`` (see ``stepline.sdk.execution``) so that a user's ``except Exception``
cannot swallow them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


class SteplineError(Exception):
    """Base class of every error Stepline raises."""


class ConfigurationError(SteplineError):
    """A function or engine was configured with a value that cannot work."""


class ExpressionError(ConfigurationError):
    """A CEL expression failed to compile or evaluate."""


class StorageError(SteplineError):
    """The database failed or could not be reached."""


class StorageValueError(StorageError):
    """The database refused a value the request carried (a NUL byte, a key too long to index):
    the request is at fault, not the database, so retrying it cannot help."""


class MigrationError(StorageError):
    """The database schema could not be migrated."""


class SerializationError(SteplineError):
    """A value that must be stored or sent is not JSON-serialisable."""


class FunctionNotFoundError(SteplineError):
    """No function with that id is registered."""


class RunNotFoundError(SteplineError):
    """No run with that id exists."""


class RunTimeoutError(SteplineError):
    """A run did not reach a terminal state within the time allowed."""


class TaskNotFoundError(SteplineError):
    """No task with that id exists (or, through ``task_routes``, the caller does not own it)."""


class TaskConflictError(SteplineError):
    """An enqueue reused a task id that belongs to a different task."""


class QuotaExceeded(SteplineError):
    """``tasks.enqueue`` was refused: ``owner`` used all ``limit`` uses of ``feature`` in the window.

    Nothing was written. ``retry_after`` is the number of seconds until a use frees up.
    """

    def __init__(self, message: str, *, feature: str, limit: int, retry_after: float) -> None:
        super().__init__(message)
        self.feature = feature
        self.limit = limit
        self.retry_after = retry_after


class RunStateError(SteplineError):
    """The action does not apply to the run as it is now (e.g. retrying a run that has not failed)."""


class EventSendError(SteplineError):
    """Sending events to the server over HTTP failed.

    ``status`` is the server's HTTP status (None when it could not be reached),
    ``server_error`` the server's ``error`` text, ``ids`` the ids of any events it accepted.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        server_error: str | None = None,
        ids: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.server_error = server_error
        self.ids = list(ids or [])


class NonDeterminismError(SteplineError):
    """The function's steps differ from what was recorded on earlier calls."""


class NonRetriableError(SteplineError):
    """Raise from a step or function to fail at once, without further retries."""


class RetryAfterError(SteplineError):
    """Raise from a step or function to retry no earlier than ``retry_after``.

    ``retry_after`` is a delay (``timedelta`` or seconds) or an absolute ``datetime``.
    """

    def __init__(self, message: str, retry_after: timedelta | float | datetime) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StepError(SteplineError):
    """A step failed for good. Raised where the function awaited that step.

    Catch it to recover; leave it uncaught and the run fails with this error.
    """

    def __init__(self, message: str, *, name: str = "Error", stack: str | None = None, step_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.stack = stack
        self.step_id = step_id

    @classmethod
    def from_wire(cls, error: dict[str, Any], step_id: str = "") -> StepError:
        return cls(
            str(error.get("message", "")),
            name=str(error.get("name", "Error")),
            stack=error.get("stack"),
            step_id=step_id,
        )
