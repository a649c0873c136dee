"""Stepline: durable functions made of memoized steps, on SQLite or PostgreSQL.

The SDK surface is imported eagerly; ``Engine`` (which needs the storage layer) on first use,
so that apps which only serve functions never import a database driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepline.errors import (
    ConfigurationError,
    EventSendError,
    ExpressionError,
    FunctionNotFoundError,
    NonDeterminismError,
    NonRetriableError,
    QuotaExceeded,
    RetryAfterError,
    RunNotFoundError,
    RunTimeoutError,
    SerializationError,
    StepError,
    SteplineError,
    StorageError,
    TaskConflictError,
    TaskNotFoundError,
)
from stepline.sdk.client import Stepline
from stepline.sdk.context import Context, ContextSync
from stepline.sdk.events import Event
from stepline.sdk.flow import (
    Batch,
    CancelOn,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
)
from stepline.sdk.function import Function
from stepline.sdk.tasks import Quota, Task, TaskPage
from stepline.sdk.triggers import on_cron, on_event

if TYPE_CHECKING:
    from stepline.engine.engine import Engine, Run, SendResult

__all__ = [
    "Batch",
    "CancelOn",
    "Concurrency",
    "ConfigurationError",
    "Context",
    "ContextSync",
    "Debounce",
    "Engine",
    "Event",
    "EventSendError",
    "ExpressionError",
    "Function",
    "FunctionNotFoundError",
    "NonDeterminismError",
    "NonRetriableError",
    "Priority",
    "Quota",
    "QuotaExceeded",
    "RateLimit",
    "RetryAfterError",
    "Run",
    "RunNotFoundError",
    "RunTimeoutError",
    "SendResult",
    "SerializationError",
    "Singleton",
    "StepError",
    "Stepline",
    "SteplineError",
    "StorageError",
    "Task",
    "TaskConflictError",
    "TaskNotFoundError",
    "TaskPage",
    "Throttle",
    "Timeouts",
    "on_cron",
    "on_event",
]

_ENGINE_NAMES = frozenset({"Engine", "Run", "SendResult"})
_LAZY_MODULES = frozenset({"fastapi", "flask", "django", "tasks", "testing"})


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        from stepline.engine import engine

        return getattr(engine, name)
    if name in _LAZY_MODULES:
        # ``stepline.fastapi.serve(...)`` and ``stepline.tasks.enqueue_in(...)`` work after a plain
        # ``import stepline``; the framework (or psycopg) is imported only by the app that uses it.
        import importlib

        return importlib.import_module(f"stepline.{name}")
    raise AttributeError(f"module 'stepline' has no attribute {name!r}")
