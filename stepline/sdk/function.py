"""A durable function: its handler, triggers and configuration."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from stepline import errors
from stepline.sdk import flow as flow_
from stepline.sdk import triggers as triggers_

if TYPE_CHECKING:
    from stepline.sdk import context

DEFAULT_RETRIES = 4
MAX_RETRIES = 20
FAILURE_RETRIES = 1
FAILED_EVENT = "inngest/function.failed"

AsyncHandler = Callable[["context.Context"], Awaitable[Any]]
SyncHandler = Callable[["context.ContextSync"], Any]
Handler = AsyncHandler | SyncHandler

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def validate_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise errors.ConfigurationError(
            f"invalid {kind} id {value!r}: use letters, digits, '-', '_', '.' or ':', starting with a letter or digit"
        )
    return value


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Function:
    """Created by ``@client.function(...)``; hand it to an ``Engine`` or a serve handler."""

    id: str
    app_id: str
    name: str
    handler: Handler
    triggers: tuple[triggers_.Trigger, ...]
    retries: int
    is_async: bool
    on_failure: Function | None = None
    """The derived function that runs ``on_failure`` when this one fails for good."""
    failure_of: str | None = None
    """For a derived on_failure function: the composite id of the function it watches."""
    flow: flow_.FlowOptions = dataclasses.field(default_factory=flow_.FlowOptions)
    """Flow-control options (concurrency, rate limit, debounce...); none by default."""

    @property
    def composite_id(self) -> str:
        """``<app_id>-<id>``, the id the protocol and the engine use."""
        return f"{self.app_id}-{self.id}"

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def with_failure_handlers(self) -> list[Function]:
        """This function followed by its on_failure function, if any."""
        return [self] if self.on_failure is None else [self, self.on_failure]

    def to_config(self, serve_url: str) -> dict[str, Any]:
        """The function's configuration as the sync protocol carries it."""
        url = f"{serve_url}?fnId={self.composite_id}&stepId=step"
        return {
            "id": self.composite_id,
            "name": self.name,
            "triggers": [trigger.to_wire() for trigger in self.triggers],
            "steps": {
                "step": {
                    "id": "step",
                    "name": "step",
                    "retries": {"attempts": self.retries},
                    "runtime": {"type": "http", "url": url},
                }
            },
            **self.flow.to_config(),
        }


def validate_retries(retries: object) -> int:
    if retries is None:
        return DEFAULT_RETRIES
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
        raise errors.ConfigurationError(f"retries must be an integer from 0 to {MAX_RETRIES} (got {retries!r})")
    return retries


def is_async_handler(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler)


def make_failure_function(parent: Function, handler: Handler | Function) -> Function:
    """The protocol's on_failure shape: a separate function triggered by ``inngest/function.failed``."""
    body: Handler = handler.handler if isinstance(handler, Function) else handler
    if not callable(body):
        raise errors.ConfigurationError(f"on_failure of {parent.id!r} must be a function taking ctx")
    expression = f"event.data.function_id == '{parent.composite_id}'"
    return Function(
        id=f"{parent.id}-failure",
        app_id=parent.app_id,
        name=f"{parent.name} (failure)",
        handler=body,
        triggers=(triggers_.EventTrigger(FAILED_EVENT, expression),),
        retries=FAILURE_RETRIES,
        is_async=is_async_handler(body),
        failure_of=parent.composite_id,
    )
