"""An app that cannot be reached does not use up a step's retries, within a grace period.

The transport is the real in-process one, wrapped to answer as the HTTP transport does when
the app is down (``AppUnreachable``) for the first calls: fault injection, not a stand-in.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import stepline
from stepline.engine import apply, dispatch
from stepline.engine import registry as registry_
from stepline.protocol import models, responses
from stepline.testing import TestEngine
from tests.engine.support import get_run, start


class _FlakyNetwork:
    supports_checkpoints = True

    def __init__(self, inner: dispatch.Transport, failures: int) -> None:
        self._inner = inner
        self.failures_left = failures
        self.calls = 0

    async def call(
        self,
        spec: registry_.FunctionSpec,
        request: models.ExecutionRequest,
        checkpointer: dispatch.CallCheckpointer | None,
    ) -> responses.CallResponse:
        self.calls += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            return responses.CallResponse(502, models.error_body("AppUnreachable", "connection refused"))
        return await self._inner.call(spec, request, checkpointer)


class _AppDownEngine(TestEngine):
    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network = _FlakyNetwork(super()._transport(), failures)

    def _transport(self) -> dispatch.Transport:
        return self.network


def _function(client: stepline.Stepline, runs: list[str]) -> stepline.Function:
    def work() -> str:
        runs.append("work")
        return "done"

    @client.function(id="steady", trigger=stepline.on_event("test/steady"), retries=1)
    async def steady(ctx: stepline.Context) -> str:
        return await ctx.step.run("work", work)

    return steady


async def test_outage_shorter_than_the_grace_period_costs_no_attempts(database_url: str) -> None:
    client = stepline.Stepline(app_id="app-down")
    runs: list[str] = []
    # Six failed calls would exhaust retries=1 three times over if they counted as attempts.
    async with _AppDownEngine(client, [_function(client, runs)], database_url=database_url, failures=6) as engine:
        run_id = await start(engine, "test/steady")
        await engine.advance(timedelta(minutes=10))
        run = await get_run(engine, run_id)
        calls = engine.network.calls
    assert run.status.value == "completed"
    assert run.output == "done"
    assert runs == ["work"]
    assert calls == 7


async def test_an_outage_past_the_grace_period_fails_the_run(database_url: str) -> None:
    client = stepline.Stepline(app_id="app-gone")
    runs: list[str] = []
    async with _AppDownEngine(client, [_function(client, runs)], database_url=database_url, failures=10**6) as engine:
        run_id = await start(engine, "test/steady")
        await engine.advance(timedelta(milliseconds=apply.APP_DOWN_GRACE_MS) + timedelta(minutes=10))
        run = await get_run(engine, run_id)
    assert run.status.value == "failed"
    assert run.error is not None
    assert "connection refused" in run.error["message"]
    assert runs == []
