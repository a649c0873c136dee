"""``ctx.step``: the step tools, async (``Step``) and sync (``StepSync``).

Both are thin shells over ``replay.ReplayState``; the only difference is how they call
user code and the checkpointer.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from stepline import errors
from stepline.protocol import durations, hashing, models, opcodes
from stepline.sdk import events as events_
from stepline.sdk import function as function_
from stepline.sdk import replay

if TYPE_CHECKING:
    from stepline.sdk import client as client_

T = TypeVar("T")
DEFAULT_WAIT_TIMEOUT = timedelta(days=365)


class Checkpointer(Protocol):
    """Durably records a step that ran inline, so the call can go on to the next step.

    Offered by transports that can record mid-call (the embedded engine); without one,
    each new step ends the call.
    """

    async def checkpoint(self, op: models.Op) -> None: ...

    def checkpoint_sync(self, op: models.Op) -> None: ...


def _function_id(function: function_.Function | str) -> str:
    if isinstance(function, function_.Function):
        return function.composite_id
    if isinstance(function, str) and function:
        return function
    raise errors.ConfigurationError(f"invoke needs a stepline function or its composite id, got {function!r}")


def _send_event_ids(state: replay.ReplayState, step: replay.StepIdentity, count: int) -> list[str]:
    """Stable ids for events sent from a step, so a retried send does not start runs twice."""
    return [f"{state.run_id}-{step.hashed[:16]}-{index}" for index in range(count)]


def _prepare_events(
    state: replay.ReplayState, step: replay.StepIdentity, events: events_.Event | Sequence[events_.Event]
) -> list[events_.Event]:
    batch = [events] if isinstance(events, events_.Event) else list(events)
    ids = _send_event_ids(state, step, len(batch))
    return [
        event if event.id is not None else events_.Event(event.name, event.data, ident, event.ts, event.user, event.v)
        for event, ident in zip(batch, ids, strict=True)
    ]


class _ParallelCollector:
    """Gathers what parallel branches report: planned ops end the call together.

    In a targeted call only the target branch executes; a branch that reached another new
    step is skipped, and the call cannot continue past the group.
    """

    def __init__(self, state: replay.ReplayState) -> None:
        self._state = state
        self._ops: list[models.Op] = []
        self._skipped = False

    def __enter__(self) -> None:
        self._state.parallel_depth += 1

    def __exit__(self, *exc_info: object) -> None:
        self._state.parallel_depth -= 1

    def absorb(self, interrupt: replay.StepInterrupt | replay.SkipInterrupt) -> None:
        if isinstance(interrupt, replay.SkipInterrupt):
            self._skipped = True
        elif self._state.target is not None:
            raise interrupt  # the target step ran: report it now
        else:
            self._ops.extend(interrupt.ops)

    def finish(self, results: list[Any]) -> tuple[Any, ...]:
        if self._ops:
            raise replay.StepInterrupt(self._ops)
        if self._skipped:
            raise replay.SkipInterrupt()
        return tuple(results)


class _StepBase:
    def __init__(self, state: replay.ReplayState, client: client_.Stepline, checkpointer: Checkpointer | None) -> None:
        self._state = state
        self._client = client
        self._checkpointer = checkpointer

    @property
    def attempt(self) -> int:
        return self._state.attempt

    def _recorded(self, step: replay.StepIdentity) -> tuple[bool, Any]:
        memo = self._state.recall(step)
        if self._state.is_missing(memo):
            return False, None
        return True, memo

    def _pause(self, step: replay.StepIdentity, op: models.Op) -> None:
        """Report a sleep/wait/invoke op (or skip it in a targeted call): always raises."""
        if self._state.new_op_decision(step) is replay.Decision.SKIP:
            raise replay.SkipInterrupt()
        raise replay.StepInterrupt([op])


class Step(_StepBase):
    """Async step tools: ``await ctx.step.run("id", fn, *args)`` and friends."""

    @overload
    async def run(self, step_id: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T: ...

    @overload
    async def run(self, step_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def run(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once; its JSON result is recorded and returned on every replay.

        ``fn`` may be a plain or an ``async`` callable.
        """
        step = self._state.identify(step_id)
        found, memo = self._recorded(step)
        if found:
            return replay.ReplayState.unwrap(step, memo)
        decision = self._state.decide_run(step)
        if decision is replay.Decision.SKIP:
            raise replay.SkipInterrupt()
        if decision is replay.Decision.PLAN:
            raise replay.StepInterrupt([self._state.planned_op(step)])
        try:
            output = fn(*args, **kwargs)
            if inspect.isawaitable(output):
                output = await output
        except Exception as exc:
            raise self._state.error_interrupt(step, exc) from None
        op = self._state.result_op(step, output)
        if op.op is not opcodes.Opcode.STEP_RUN or self._checkpointer is None or self._state.target:
            raise replay.StepInterrupt([op])
        await self._checkpointer.checkpoint(op)
        self._state.remember(step, output)
        return output

    async def parallel(self, *branches: Callable[[], Awaitable[Any]]) -> tuple[Any, ...]:
        """Run branches (each usually one ``step.run``) as separate, independently retried steps."""
        results: list[Any] = []
        collector = _ParallelCollector(self._state)
        with collector:
            for branch in branches:
                try:
                    results.append(await branch())
                except (replay.StepInterrupt, replay.SkipInterrupt) as interrupt:
                    collector.absorb(interrupt)
        return collector.finish(results)

    async def sleep(self, step_id: str, duration: timedelta | float | str) -> None:
        """Pause the run for ``duration`` (no process is kept waiting)."""
        step = self._state.identify(step_id)
        found, _ = self._recorded(step)
        if not found:
            delta = duration if isinstance(duration, timedelta | str) else timedelta(seconds=duration)
            self._pause(step, self._state.sleep_op(step, duration=_as_timedelta(delta), until=None))

    async def sleep_until(self, step_id: str, until: datetime) -> None:
        """Pause the run until ``until`` (naive datetimes are UTC)."""
        step = self._state.identify(step_id)
        found, _ = self._recorded(step)
        if not found:
            self._pause(step, self._state.sleep_op(step, duration=None, until=until))

    async def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        if_exp: str | None = None,
        timeout: timedelta | str = DEFAULT_WAIT_TIMEOUT,
    ) -> events_.Event | None:
        """Wait for an ``event`` arriving after this call for which ``if_exp`` holds; None on timeout."""
        step = self._state.identify(step_id)
        found, memo = self._recorded(step)
        if found:
            return _recorded_event(step, memo)
        self._pause(step, self._state.wait_op(step, event=event, if_exp=if_exp, timeout=timeout))
        return None  # pragma: no cover - _pause always raises

    async def invoke(
        self,
        step_id: str,
        *,
        function: function_.Function | str,
        data: dict[str, Any] | None = None,
        timeout: timedelta | str | None = None,
    ) -> Any:
        """Start ``function`` as a child run and return its output (``StepError`` if it fails)."""
        step = self._state.identify(step_id)
        found, memo = self._recorded(step)
        if found:
            return replay.ReplayState.unwrap(step, memo)
        op = self._state.invoke_op(step, function_id=_function_id(function), data=data or {}, timeout=timeout)
        self._pause(step, op)

    async def send_event(self, step_id: str, events: events_.Event | Sequence[events_.Event]) -> list[str]:
        """Send events from inside the run, exactly once per recorded step; returns their ids."""
        state = self._state

        async def send() -> dict[str, list[str]]:
            step = _current_identity(state, step_id)
            return {"ids": await self._client.send(_prepare_events(state, step, events))}

        result: dict[str, list[str]] = await self.run(step_id, send)
        return list(result["ids"])


class StepSync(_StepBase):
    """Sync step tools for ``def f(ctx: stepline.ContextSync)``: the same calls, returning values."""

    def run(self, step_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        step = self._state.identify(step_id)
        found, memo = self._recorded(step)
        if found:
            result: T = replay.ReplayState.unwrap(step, memo)
            return result
        decision = self._state.decide_run(step)
        if decision is replay.Decision.SKIP:
            raise replay.SkipInterrupt()
        if decision is replay.Decision.PLAN:
            raise replay.StepInterrupt([self._state.planned_op(step)])
        try:
            output = fn(*args, **kwargs)
        except Exception as exc:
            raise self._state.error_interrupt(step, exc) from None
        op = self._state.result_op(step, output)
        if op.op is not opcodes.Opcode.STEP_RUN or self._checkpointer is None or self._state.target:
            raise replay.StepInterrupt([op])
        self._checkpointer.checkpoint_sync(op)
        self._state.remember(step, output)
        return output

    def parallel(self, *branches: Callable[[], Any]) -> tuple[Any, ...]:
        results: list[Any] = []
        collector = _ParallelCollector(self._state)
        with collector:
            for branch in branches:
                try:
                    results.append(branch())
                except (replay.StepInterrupt, replay.SkipInterrupt) as interrupt:
                    collector.absorb(interrupt)
        return collector.finish(results)

    def sleep(self, step_id: str, duration: timedelta | float | str) -> None:
        step = self._state.identify(step_id)
        found, _ = self._recorded(step)
        if not found:
            delta = duration if isinstance(duration, timedelta | str) else timedelta(seconds=duration)
            self._pause(step, self._state.sleep_op(step, duration=_as_timedelta(delta), until=None))

    def sleep_until(self, step_id: str, until: datetime) -> None:
        step = self._state.identify(step_id)
        found, _ = self._recorded(step)
        if not found:
            self._pause(step, self._state.sleep_op(step, duration=None, until=until))

    def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        if_exp: str | None = None,
        timeout: timedelta | str = DEFAULT_WAIT_TIMEOUT,
    ) -> events_.Event | None:
        step = self._state.identify(step_id)
        found, memo = self._recorded(step)
        if found:
            return _recorded_event(step, memo)
        self._pause(step, self._state.wait_op(step, event=event, if_exp=if_exp, timeout=timeout))
        return None  # pragma: no cover - _pause always raises

    def invoke(
        self,
        step_id: str,
        *,
        function: function_.Function | str,
        data: dict[str, Any] | None = None,
        timeout: timedelta | str | None = None,
    ) -> Any:
        step = self._state.identify(step_id)
        found, memo = self._recorded(step)
        if found:
            return replay.ReplayState.unwrap(step, memo)
        op = self._state.invoke_op(step, function_id=_function_id(function), data=data or {}, timeout=timeout)
        self._pause(step, op)

    def send_event(self, step_id: str, events: events_.Event | Sequence[events_.Event]) -> list[str]:
        state = self._state

        def send() -> dict[str, list[str]]:
            step = _current_identity(state, step_id)
            return {"ids": self._client.send_sync(_prepare_events(state, step, events))}

        result: dict[str, list[str]] = self.run(step_id, send)
        return list(result["ids"])


def _current_identity(state: replay.ReplayState, step_id: str) -> replay.StepIdentity:
    """The identity ``run`` just assigned to ``step_id`` (its latest use), without counting a new use."""
    uses = state._uses.get(step_id, 1) - 1  # same package, read-only
    return replay.StepIdentity(
        step_id,
        hashing.indexed_step_id(step_id, uses),
        hashing.hash_step_id(hashing.indexed_step_id(step_id, uses)),
        uses or None,
    )


def _recorded_event(step: replay.StepIdentity, memo: Any) -> events_.Event | None:
    """A wait's memo: the matched event, None on timeout, or an error (e.g. a bad expression)."""
    if not isinstance(memo, dict):
        return None
    if set(memo) == {"error"}:
        replay.ReplayState.unwrap(step, memo)  # raises StepError
    return events_.Event.from_wire(memo)


def _as_timedelta(value: timedelta | str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(milliseconds=durations.to_milliseconds(value))
