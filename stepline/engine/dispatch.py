"""Calling a function in this process, through the same request/response models as HTTP.

The embedded transport hands the SDK a checkpointer: consecutive ``step.run``s execute
inside one call, each durably recorded before the next starts (same guarantees as one call
per step, far fewer round-trips).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from stepline import errors
from stepline.engine import apply as apply_
from stepline.engine import registry as registry_
from stepline.engine import threadsafe
from stepline.protocol import models, responses
from stepline.sdk import client as client_
from stepline.sdk import execution
from stepline.sdk import function as function_
from stepline.storage import records


def build_request(
    run: records.RunRecord,
    steps: list[records.StepRecord],
    item: records.QueueItem,
    fn: registry_.FunctionSpec,
) -> models.ExecutionRequest:
    stack = [step.step_id for step in steps]
    return models.ExecutionRequest(
        ctx=models.RequestContext(
            run_id=run.id,
            attempt=item.attempt,
            max_attempts=fn.max_attempts,
            disable_immediate_execution=run.disable_immediate,
            stack=models.Stack(current=len(stack), stack=stack),
            step_id=item.step_id if item.kind is records.ItemKind.STEP and item.step_id else "step",
            task_id=run.task_id,
        ),
        event=run.events[0] if run.events else {},
        events=run.events,
        steps={step.step_id: step.result for step in steps},
        version=run.request_version,
    )


class CallCheckpointer:
    """Records inline steps of one call through the applier; usable from the loop or a worker thread."""

    def __init__(
        self,
        applier: apply_.Applier,
        item: records.QueueItem,
        run_id: str,
        started_at: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._applier = applier
        self._item = item
        self._run_id = run_id
        self._started_at = started_at
        self._loop = loop

    async def checkpoint(self, op: models.Op) -> None:
        await self._applier.checkpoint(self._item, self._run_id, op, self._started_at)
        self._started_at = self._applier.now_ms()

    def checkpoint_sync(self, op: models.Op) -> None:
        threadsafe.wait_on(self._loop, self.checkpoint(op))


class Transport(Protocol):
    """How a call reaches a function: in this process, or over HTTP to the app that serves it."""

    supports_checkpoints: bool

    async def call(
        self,
        spec: registry_.FunctionSpec,
        request: models.ExecutionRequest,
        checkpointer: CallCheckpointer | None,
    ) -> responses.CallResponse: ...


class InProcessTransport:
    supports_checkpoints = True

    def __init__(self, client: client_.Stepline, functions: dict[str, function_.Function]) -> None:
        self._client = client
        self._functions = functions

    async def call(
        self,
        spec: registry_.FunctionSpec,
        request: models.ExecutionRequest,
        checkpointer: CallCheckpointer | None,
    ) -> responses.CallResponse:
        fn = self._functions.get(spec.id)
        if fn is None:
            raise errors.FunctionNotFoundError(f"function {spec.id!r} is not defined in this process")
        if fn.is_async:
            return await execution.execute(fn, self._client, request, checkpointer=checkpointer)
        return await asyncio.to_thread(execution.execute_sync, fn, self._client, request, checkpointer=checkpointer)
