"""``ctx``: what a function receives on every call."""

from __future__ import annotations

import dataclasses
import logging

from stepline.sdk import events as events_
from stepline.sdk import step as step_
from stepline.sdk import tasks as tasks_


@dataclasses.dataclass(slots=True)
class _ContextBase:
    event: events_.Event
    """The triggering event (the first, for a batch)."""
    events: list[events_.Event]
    run_id: str
    function_id: str
    logger: logging.Logger


@dataclasses.dataclass(slots=True)
class Context(_ContextBase):
    """For ``async def`` functions: ``await ctx.step.run(...)``."""

    step: step_.Step = dataclasses.field(kw_only=True)
    task: tasks_.TaskHandle = dataclasses.field(kw_only=True)
    """The tracked task this run drives: ``await ctx.task.progress(0.6, "embedding")``."""

    @property
    def attempt(self) -> int:
        """Attempt number of the step about to run (0 first); starts again at 0 for each new step."""
        return self.step.attempt


@dataclasses.dataclass(slots=True)
class ContextSync(_ContextBase):
    """For plain ``def`` functions (Flask, Django): ``ctx.step.run(...)`` returns the value."""

    step: step_.StepSync = dataclasses.field(kw_only=True)
    task: tasks_.TaskHandleSync = dataclasses.field(kw_only=True)
    """The tracked task this run drives: ``ctx.task.progress(0.6, "embedding")``."""

    @property
    def attempt(self) -> int:
        """Attempt number of the step about to run (0 first); starts again at 0 for each new step."""
        return self.step.attempt
