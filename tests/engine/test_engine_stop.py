"""Stopping an embedded engine, on SQLite and PostgreSQL: a stop cut short by the caller (a
timeout around ``engine.stop()`` shorter than its grace) still leaves the engine stopped: the
calls it was waiting for are cancelled rather than left running on a closed database, the client
is detached, and the engine starts again and runs work as before."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import stepline
from stepline import errors

TIMEOUT_S = 30.0


async def test_a_stop_cut_short_leaves_the_engine_stopped_and_able_to_start_again(database_url: str) -> None:
    client = stepline.Stepline(app_id="stop-cut-short")
    step_started = asyncio.Event()
    step_cancelled = asyncio.Event()

    async def wait_a_long_time() -> str:
        step_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            step_cancelled.set()
            raise
        return "slept"

    @client.function(id="slow", trigger=stepline.on_event("test/slow"))
    async def slow(ctx: stepline.Context) -> str:
        return await ctx.step.run("sleep", wait_a_long_time)

    @client.function(id="quick", trigger=stepline.on_event("test/quick"))
    async def quick(ctx: stepline.Context) -> str:
        return await ctx.step.run("answer", lambda: "done")

    engine = stepline.Engine(client, [slow, quick], database_url)
    await engine.start()
    await client.send(stepline.Event(name="test/slow"))
    await asyncio.wait_for(step_started.wait(), TIMEOUT_S)

    with pytest.raises(TimeoutError):  # the grace (60 s) outlasts the caller's patience
        await asyncio.wait_for(engine.stop(timedelta(seconds=60)), 0.3)

    assert step_cancelled.is_set(), "the call in flight is cancelled, not left running on a closed store"
    with pytest.raises(errors.ConfigurationError, match="not started"):
        _ = engine.store
    with pytest.raises(errors.ConfigurationError):
        await client.send(stepline.Event(name="test/quick"))  # detached: not sent into a closed store

    await engine.start()
    try:
        [run_id] = (await engine.send(stepline.Event(name="test/quick"))).run_ids
        run = await engine.wait_for_run(run_id, timeout=TIMEOUT_S)
        assert run.status == "completed"
        assert run.output == "done"
    finally:
        await engine.stop(timedelta(0))
