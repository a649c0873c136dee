"""Running one call of a function against an execution request.

Both transports use this: the HTTP serve handler and the embedded engine's in-process
call. The result is a ``CallResponse`` (status, body, retry headers), whatever happened:
user errors become responses, never exceptions.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from stepline import errors
from stepline.protocol import jsonvalue, models, responses
from stepline.sdk import client as client_
from stepline.sdk import context, replay
from stepline.sdk import events as events_
from stepline.sdk import function as function_
from stepline.sdk import step as step_
from stepline.sdk import tasks as tasks_

logger = logging.getLogger("stepline.function")

_NO_RETRY_ERRORS = (
    errors.NonRetriableError,
    errors.StepError,
    errors.NonDeterminismError,
    errors.SerializationError,
    errors.ConfigurationError,
)


def _context_fields(function: function_.Function, request: models.ExecutionRequest) -> dict[str, Any]:
    """What ``Context`` and ``ContextSync`` share, taken from the request."""
    event = events_.Event.from_wire(request.event)
    return {
        "event": event,
        "events": [events_.Event.from_wire(item) for item in request.events] or [event],
        "run_id": request.ctx.run_id,
        "function_id": function.composite_id,
        "logger": logger,
    }


def _completed(state: replay.ReplayState, output: Any) -> responses.CallResponse:
    try:
        state.check_all_memo_reached(None)
        jsonvalue.check_json(output, "the function's return value")
    except (errors.NonDeterminismError, errors.SerializationError) as problem:
        return _failed(problem)
    return responses.CallResponse(200, output)


def _interrupted(interrupt: replay.StepInterrupt) -> responses.CallResponse:
    return responses.CallResponse(206, [op.to_wire() for op in interrupt.ops], retry_after=interrupt.retry_after)


def _failed(exc: BaseException) -> responses.CallResponse:
    retry_after = None
    if isinstance(exc, errors.RetryAfterError):
        retry_after = replay.format_retry_after(exc.retry_after)
    return responses.CallResponse(
        500, replay.error_to_wire(exc), no_retry=isinstance(exc, _NO_RETRY_ERRORS), retry_after=retry_after
    )


def _skipped(request: models.ExecutionRequest) -> responses.CallResponse:
    error = models.error_body(
        "StepNotFound",
        f"step {request.target_step} was not reached by this call; the function's steps changed",
    )
    return responses.CallResponse(500, error | {"code": "step_unexpected"})


async def execute(
    function: function_.Function,
    client: client_.Stepline,
    request: models.ExecutionRequest,
    *,
    checkpointer: step_.Checkpointer | None = None,
) -> responses.CallResponse:
    """One call of an ``async def`` function (sync functions: ``execute_sync``, in a worker thread)."""
    if not function.is_async:
        raise errors.ConfigurationError(f"{function.id!r} is synchronous: call execute_sync in a thread")
    state = replay.ReplayState(request, checkpointing=checkpointer is not None)
    ctx = context.Context(
        **_context_fields(function, request),
        step=step_.Step(state, client, checkpointer),
        task=tasks_.TaskHandle(request.ctx.task_id, client, lambda: state.replaying),
    )
    try:
        output = await cast(function_.AsyncHandler, function.handler)(ctx)
    except replay.StepInterrupt as interrupt:
        return _interrupted(interrupt)
    except replay.SkipInterrupt:
        return _skipped(request)
    except Exception as exc:
        return _failed(exc)
    return _completed(state, output)


def execute_sync(
    function: function_.Function,
    client: client_.Stepline,
    request: models.ExecutionRequest,
    *,
    checkpointer: step_.Checkpointer | None = None,
) -> responses.CallResponse:
    """One call of a plain ``def`` function. Blocks: run it off the event loop."""
    if function.is_async:
        raise errors.ConfigurationError(f"{function.id!r} is async: call execute")
    state = replay.ReplayState(request, checkpointing=checkpointer is not None)
    ctx = context.ContextSync(
        **_context_fields(function, request),
        step=step_.StepSync(state, client, checkpointer),
        task=tasks_.TaskHandleSync(request.ctx.task_id, client, lambda: state.replaying),
    )
    try:
        output = cast(function_.SyncHandler, function.handler)(ctx)
    except replay.StepInterrupt as interrupt:
        return _interrupted(interrupt)
    except replay.SkipInterrupt:
        return _skipped(request)
    except Exception as exc:
        return _failed(exc)
    return _completed(state, output)
