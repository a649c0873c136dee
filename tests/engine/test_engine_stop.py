"""Stopping an embedded engine, on SQLite and PostgreSQL: a stop cut short by the caller (a
timeout around ``engine.stop()`` shorter than its grace) still leaves the engine stopped: the
calls it was waiting for are cancelled rather than left running on a closed database, the client
is detached, and the engine starts again and runs work as before."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import timedelta

import anyio
import pytest

import stepline
from stepline import errors

TIMEOUT_S = 30.0


@dataclasses.dataclass
class SlowAndQuick:
    """An app with a function whose step sleeps until cancelled, then tidies up, and one that
    ends at once. Thread-safe events: the engine may run on a thread of its own."""

    client: stepline.Stepline
    functions: list[stepline.Function]
    started: threading.Event
    cancelled: threading.Event


def slow_and_quick(app_id: str, tidy_up_s: float = 0.0, *, stubborn: bool = False) -> SlowAndQuick:
    """``stubborn``: the slow step swallows further cancellations while it tidies up, as a call
    that will not be hurried does."""
    client = stepline.Stepline(app_id=app_id)
    started, cancelled = threading.Event(), threading.Event()

    async def sleep_until_cancelled() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            deadline = time.monotonic() + tidy_up_s
            while time.monotonic() < deadline:
                try:
                    await asyncio.sleep(min(0.05, tidy_up_s))
                except asyncio.CancelledError:
                    if not stubborn:
                        raise
            raise
        return "slept"

    @client.function(id="slow", trigger=stepline.on_event("test/slow"))
    async def slow(ctx: stepline.Context) -> str:
        return await ctx.step.run("sleep", sleep_until_cancelled)

    @client.function(id="quick", trigger=stepline.on_event("test/quick"))
    async def quick(ctx: stepline.Context) -> str:
        return await ctx.step.run("answer", lambda: "done")

    return SlowAndQuick(client, [slow, quick], started, cancelled)


async def started_slow(app: SlowAndQuick, database_url: str) -> stepline.Engine:
    """An engine running ``app`` with the slow step under way."""
    engine = stepline.Engine(app.client, app.functions, database_url)
    await engine.start()
    await engine.send(stepline.Event(name="test/slow"))
    assert await asyncio.to_thread(app.started.wait, TIMEOUT_S)
    return engine


async def test_a_stop_cut_short_leaves_the_engine_stopped_and_able_to_start_again(database_url: str) -> None:
    app = slow_and_quick("stop-cut-short")
    client = app.client
    engine = await started_slow(app, database_url)

    with pytest.raises(TimeoutError):  # the grace (60 s) outlasts the caller's patience
        await asyncio.wait_for(engine.stop(timedelta(seconds=60)), 0.3)

    assert app.cancelled.is_set(), "the call in flight is cancelled, not left running on a closed store"
    with pytest.raises(errors.ConfigurationError, match="not started"):
        _ = engine.store
    with pytest.raises(errors.ConfigurationError):
        await client.send(stepline.Event(name="test/quick"))  # detached: not sent into a closed store

    await starts_again_and_runs(engine)


async def starts_again_and_runs(engine: stepline.Engine) -> None:
    await engine.start()
    try:
        await runs_quick(engine)
    finally:
        await engine.stop(timedelta(0))


async def runs_quick(engine: stepline.Engine) -> None:
    [run_id] = (await engine.send(stepline.Event(name="test/quick"))).run_ids
    run = await engine.wait_for_run(run_id, timeout=TIMEOUT_S)
    assert run.status == "completed"
    assert run.output == "done"


async def test_a_stop_cancelled_again_and_again_still_closes_the_engine(database_url: str) -> None:
    """anyio's cancel scopes (Starlette's and FastAPI's lifespans run in them) cancel a cancelled
    caller again at every await: the stop's closing must still run to its end."""
    app = slow_and_quick("stop-cancelled-again", tidy_up_s=0.3)
    client = app.client
    engine = await started_slow(app, database_url)
    store = engine.store

    with anyio.move_on_after(0.3) as scope:
        await engine.stop(timedelta(seconds=60))
    assert scope.cancelled_caught
    await engine.stop()  # waits for the closing still under way

    with pytest.raises(errors.StorageError, match="closed"):
        await store.get_task("any")  # its connections are closed, not leaked
    with pytest.raises(errors.ConfigurationError):
        await client.send(stepline.Event(name="test/quick"))  # detached: nothing goes to the old store
    await starts_again_and_runs(engine)


async def test_a_start_during_a_stop_is_refused_then_waits_for_the_closing(database_url: str) -> None:
    app = slow_and_quick("start-while-stopping", tidy_up_s=0.3)
    client = app.client
    engine = await started_slow(app, database_url)

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
