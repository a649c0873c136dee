"""Stopping an embedded engine, on SQLite and PostgreSQL: a stop cut short by the caller (a
timeout around ``engine.stop()`` shorter than its grace) still leaves the engine stopped: the
calls it was waiting for are cancelled rather than left running on a closed database, the client
is detached, and the engine starts again and runs work as before."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import anyio
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


def slow_and_quick(app_id: str, tidy_up_s: float) -> tuple[stepline.Stepline, list[stepline.Function], asyncio.Event]:
    """A function whose step sleeps until cancelled, then tidies up for ``tidy_up_s``, and one that
    ends at once; the event is set once the slow step runs."""
    client = stepline.Stepline(app_id=app_id)
    step_started = asyncio.Event()

    async def sleep_until_cancelled() -> str:
        step_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(tidy_up_s)
            raise
        return "slept"

    @client.function(id="slow", trigger=stepline.on_event("test/slow"))
    async def slow(ctx: stepline.Context) -> str:
        return await ctx.step.run("sleep", sleep_until_cancelled)

    @client.function(id="quick", trigger=stepline.on_event("test/quick"))
    async def quick(ctx: stepline.Context) -> str:
        return await ctx.step.run("answer", lambda: "done")

    return client, [slow, quick], step_started


async def runs_quick(engine: stepline.Engine) -> None:
    [run_id] = (await engine.send(stepline.Event(name="test/quick"))).run_ids
    run = await engine.wait_for_run(run_id, timeout=TIMEOUT_S)
    assert run.status == "completed"


async def test_a_stop_cancelled_again_and_again_still_closes_the_engine(database_url: str) -> None:
    """anyio's cancel scopes (Starlette's and FastAPI's lifespans run in them) cancel a cancelled
    caller again at every await: the stop's closing must still run to its end."""
    client, functions, step_started = slow_and_quick("stop-cancelled-again", tidy_up_s=0.3)
    engine = stepline.Engine(client, functions, database_url)
    await engine.start()
    store = engine.store
    await engine.send(stepline.Event(name="test/slow"))
    await asyncio.wait_for(step_started.wait(), TIMEOUT_S)

    with anyio.move_on_after(0.3) as scope:
        await engine.stop(timedelta(seconds=60))
    assert scope.cancelled_caught
    await engine.stop()  # waits for the closing still under way

    with pytest.raises(errors.StorageError, match="closed"):
        await store.get_task("any")  # its connections are closed, not leaked
    with pytest.raises(errors.ConfigurationError):
        await client.send(stepline.Event(name="test/quick"))  # detached: nothing goes to the old store
    await engine.start()
    try:
        await runs_quick(engine)
    finally:
        await engine.stop(timedelta(0))


async def test_a_start_during_a_stop_is_refused_then_waits_for_the_closing(database_url: str) -> None:
    client, functions, step_started = slow_and_quick("start-while-stopping", tidy_up_s=0.3)
    engine = stepline.Engine(client, functions, database_url)
    await engine.start()
    await engine.send(stepline.Event(name="test/slow"))
    await asyncio.wait_for(step_started.wait(), TIMEOUT_S)

    stopping = asyncio.create_task(engine.stop(timedelta(seconds=60)))
    await asyncio.sleep(0.1)
    with pytest.raises(errors.ConfigurationError, match="stopping"):
        await engine.start()  # it would be undone by the stop under way
    with anyio.move_on_after(0.1):  # the stop's caller gives up, cancelling it again and again
        await asyncio.shield(stopping)
    stopping.cancel()
    with anyio.move_on_after(0.1):
        await asyncio.gather(stopping, return_exceptions=True)

    await engine.start()  # waits for the closing, then starts for good
    try:
        await asyncio.sleep(0.5)  # longer than the old step's tidying up
        assert await client.send(stepline.Event(name="test/quick")), "still attached: the old stop did not undo it"
        await runs_quick(engine)
    finally:
        await engine.stop(timedelta(0))
