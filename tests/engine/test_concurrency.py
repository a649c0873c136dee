"""Concurrency limits: at most N calls of a function in flight, per function and per key."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

import stepline
from stepline import errors
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.flow_support import with_flow
from tests.engine.support import get_run, step_names


class InFlight:
    """Counts steps running at once, overall and per key, and remembers the peaks."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    async def hold(self, *keys: str) -> None:
        for key in keys:
            self.now[key] += 1
            self.peak[key] = max(self.peak[key], self.now[key])
        for _ in range(1000):  # let every other ready call start meanwhile, if it may (no clock time passes)
            await asyncio.sleep(0)
        for key in keys:
            self.now[key] -= 1


async def test_a_function_limit_bounds_the_calls_in_flight(database_url: str) -> None:
    client = stepline.Stepline(app_id="conc-fn")
    seen = InFlight()

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> None:
        await ctx.step.run("a", seen.hold, "all")
        await ctx.step.run("b", seen.hold, "all")

    limited = with_flow(work, concurrency=[{"limit": 2}])
    async with TestEngine(client, [limited], database_url=database_url) as engine:
        result = await engine.send([stepline.Event("test/work", {"n": n}) for n in range(8)])
        await engine.run_until_idle()
        runs = [await get_run(engine, run_id) for run_id in result.run_ids]

    assert [run.status for run in runs] == [RunStatus.COMPLETED] * 8
    assert seen.peak["all"] <= 2


async def test_without_a_limit_the_same_function_runs_wide(database_url: str) -> None:
    """The control for the test above: the peak there is the limit, not the engine's width."""
    client = stepline.Stepline(app_id="conc-none")
    seen = InFlight()

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> None:
        await ctx.step.run("a", seen.hold, "all")

    async with TestEngine(client, [work], database_url=database_url) as engine:
        await engine.send([stepline.Event("test/work", {"n": n}) for n in range(8)])
        await engine.run_until_idle()

    assert seen.peak["all"] > 2


async def test_a_key_limit_holds_per_key_while_keys_run_side_by_side(database_url: str) -> None:
    client = stepline.Stepline(app_id="conc-key")
    seen = InFlight()

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> None:
        user = ctx.event.data["user"]
        await ctx.step.run("a", seen.hold, "all", f"user:{user}")

    limited = with_flow(work, concurrency=[{"limit": 1, "key": "event.data.user"}])
    async with TestEngine(client, [limited], database_url=database_url) as engine:
        await engine.send([stepline.Event("test/work", {"user": user}) for user in "abc" * 4])
        await engine.run_until_idle()

    assert {seen.peak[f"user:{user}"] for user in "abc"} == {1}
    assert seen.peak["all"] > 1  # keys ran side by side


async def test_two_constraints_both_hold(database_url: str) -> None:
    client = stepline.Stepline(app_id="conc-two")
    seen = InFlight()

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> None:
        await ctx.step.run("a", seen.hold, "all", f"user:{ctx.event.data['user']}")

    limited = with_flow(work, concurrency=[{"limit": 2}, {"limit": 1, "key": "event.data.user"}])
    async with TestEngine(client, [limited], database_url=database_url) as engine:
        result = await engine.send([stepline.Event("test/work", {"user": user}) for user in "aabbcc"])
        await engine.run_until_idle()
        runs = [await get_run(engine, run_id) for run_id in result.run_ids]

    assert all(run.status is RunStatus.COMPLETED for run in runs)
    assert seen.peak["all"] <= 2
    assert max(seen.peak[f"user:{user}"] for user in "abc") == 1


async def test_parallel_steps_each_take_a_slot(database_url: str) -> None:
    client = stepline.Stepline(app_id="conc-parallel")
    seen = InFlight()

    @client.function(id="fan", trigger=stepline.on_event("test/fan"))
    async def fan(ctx: stepline.Context) -> None:
        await ctx.step.parallel(*(lambda n=n: ctx.step.run(f"p{n}", seen.hold, "all") for n in range(6)))

    limited = with_flow(fan, concurrency=2)  # the bare-number form
    async with TestEngine(client, [limited], database_url=database_url) as engine:
        result = await engine.send(stepline.Event("test/fan"))
        await engine.run_until_idle()
        run = await get_run(engine, result.run_ids[0])

    assert run.status is RunStatus.COMPLETED
    assert seen.peak["all"] <= 2


async def test_a_sleeping_run_holds_no_slot(database_url: str) -> None:
    client = stepline.Stepline(app_id="conc-sleep")

    @client.function(id="nap", trigger=stepline.on_event("test/nap"))
    async def nap(ctx: stepline.Context) -> None:
        await ctx.step.run("before", lambda: None)
        await ctx.step.sleep("nap", timedelta(hours=1))
        await ctx.step.run("after", lambda: None)

    limited = with_flow(nap, concurrency={"limit": 1})  # the single-object form
    async with TestEngine(client, [limited], database_url=database_url) as engine:
        result = await engine.send([stepline.Event("test/nap") for _ in range(3)])
        await engine.run_until_idle()
        asleep = [await get_run(engine, run_id) for run_id in result.run_ids]
        await engine.advance(timedelta(hours=1))
        done = [await get_run(engine, run_id) for run_id in result.run_ids]

    # With one slot, all three runs got past "before" while the others slept.
    assert [step_names(run) for run in asleep] == [["before"]] * 3
    assert [step_names(run) for run in done] == [["before", "nap", "after"]] * 3


async def test_a_cancelled_run_gives_its_place_to_the_next(database_url: str) -> None:
    client = stepline.Stepline(app_id="conc-cancel")

    @client.function(id="wait", trigger=stepline.on_event("test/wait"))
    async def wait(ctx: stepline.Context) -> str:
        await ctx.step.sleep("hold", timedelta(minutes=5))
        return "done"

    limited = with_flow(wait, concurrency=1)
    async with TestEngine(client, [limited], database_url=database_url) as engine:
        first = (await engine.send(stepline.Event("test/wait"))).run_ids[0]
        second = (await engine.send(stepline.Event("test/wait"))).run_ids[0]
        await engine.cancel_run(first)
        await engine.advance(timedelta(minutes=5))
        assert (await get_run(engine, first)).status is RunStatus.CANCELLED
        assert (await get_run(engine, second)).status is RunStatus.COMPLETED


@pytest.mark.parametrize(
    ("concurrency", "message"),
    [
        (0, "concurrency limit must be a positive integer"),
        ([{"limit": 1}, {"limit": 2, "key": "event.data.a"}, {"limit": 3}], "at most 2"),
        ({"limit": 1, "key": "event.data.("}, "concurrency key"),
        ({"limit": 1, "scope": "galaxy"}, "concurrency scope"),
    ],
)
def test_bad_concurrency_is_refused_when_the_engine_is_built(concurrency: object, message: str) -> None:
    client = stepline.Stepline(app_id="conc-bad")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> None:
        return None

    with pytest.raises(errors.ConfigurationError, match=message) as caught:
        TestEngine(client, [with_flow(work, concurrency=concurrency)])
    assert "conc-bad-work" in str(caught.value)


async def test_a_dead_workers_slot_comes_back_when_its_lease_expires(database_url: str) -> None:
    client = stepline.Stepline(app_id="conc-dead")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> str:
        return await ctx.step.run("a", lambda: "done")

    limited = with_flow(work, concurrency=1)
    async with TestEngine(client, [limited], database_url=database_url) as engine:
        result = await engine.send([stepline.Event("test/work") for _ in range(2)])
        now = engine.fake_clock.now_ms()
        # Another worker claims the first run's call and dies holding its slot (and its lease).
        [stolen] = await engine.store.claim(now, 1, now + 30_000)
        await engine.run_until_idle()
        waiting = [(await get_run(engine, run_id)).status for run_id in result.run_ids]
        await engine.advance(timedelta(seconds=31))
        done = [(await get_run(engine, run_id)).status for run_id in result.run_ids]

    assert stolen.run_id == result.run_ids[0]
    assert waiting == [RunStatus.QUEUED, RunStatus.QUEUED]  # the second waits for the held slot
    assert done == [RunStatus.COMPLETED, RunStatus.COMPLETED]
