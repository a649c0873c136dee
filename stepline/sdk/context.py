"""``ctx``: what a function receives on every call."""

from __future__ import annotations

import dataclasses
import logging

from stepline.sdk import events as events_
from stepline.sdk import step as step_


@dataclasses.dataclass(slots=True)
class _ContextBase:
    event: events_.Event
    """The triggering event (the first, for a batch)."""
    events: list[events_.Event]
    run_id: str
    function_id: str
    attempt: int
    """Attempt of the current call (0 first); resets for each new step."""
    logger: logging.Logger


@dataclasses.dataclass(slots=True)
class Context(_ContextBase):
    """For ``async def`` functions: ``await ctx.step.run(...)``."""

    step: step_.Step = dataclasses.field(kw_only=True)


@dataclasses.dataclass(slots=True)
class ContextSync(_ContextBase):
    """For plain ``def`` functions (Flask, Django): ``ctx.step.run(...)`` returns the value."""

    step: step_.StepSync = dataclasses.field(kw_only=True)
