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
    RetryAfterError,
    RunNotFoundError,
    RunTimeoutError,
    SerializationError,
    StepError,
    SteplineError,
    StorageError,
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
    "Throttle",
    "Timeouts",
    "on_cron",
    "on_event",
]

_ENGINE_NAMES = frozenset({"Engine", "Run", "SendResult"})
_ADAPTERS = frozenset({"fastapi", "flask", "django"})


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        from stepline.engine import engine

        return getattr(engine, name)
    if name in _ADAPTERS:
        # ``stepline.fastapi.serve(...)`` works after a plain ``import stepline``; the framework
        # is imported only by the app that uses it.
        import importlib

        return importlib.import_module(f"stepline.{name}")
    raise AttributeError(f"module 'stepline' has no attribute {name!r}")
