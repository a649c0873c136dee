"""``step.parallel``: branches are separate steps, each run once and retried on its own."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_named


async def test_parallel_returns_both_results_and_runs_each_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="parallel-ok")
    calls: Counter[str] = Counter()

    def fetch(name: str) -> str:
        calls[name] += 1
        return f"{name}-result"

    @client.function(id="fan-out", trigger=stepline.on_event("test/fan-out"))
    async def fan_out(ctx: stepline.Context) -> dict[str, object]:
        results = await ctx.step.parallel(
            lambda: ctx.step.run("a", fetch, "a"),
            lambda: ctx.step.run("b", fetch, "b"),
        )
        joined = await ctx.step.run("join", lambda: "+".join(results))
        return {"results": list(results), "is_tuple": isinstance(results, tuple), "joined": joined}

    async with TestEngine(client, [fan_out], database_url=database_url) as engine:
        run_id = await start(engine, "test/fan-out")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"results": ["a-result", "b-result"], "is_tuple": True, "joined": "a-result+b-result"}
    assert calls == {"a": 1, "b": 1}
    assert sorted(step.name for step in run.steps) == ["a", "b", "join"]
    assert run.steps[-1].name == "join"


async def test_parallel_branch_failure_retries_only_that_branch(database_url: str) -> None:
    client = stepline.Stepline(app_id="parallel-retry")
    calls: Counter[str] = Counter()

    def steady() -> str:
        calls["a"] += 1
        return "A"

    def shaky() -> str:
        calls["b"] += 1
        if calls["b"] == 1:
            raise RuntimeError("b failed once")
        return "B"

    @client.function(id="fan-retry", trigger=stepline.on_event("test/fan-retry"), retries=2)
    async def fan_retry(ctx: stepline.Context) -> list[str]:
        results = await ctx.step.parallel(
            lambda: ctx.step.run("a", steady),
            lambda: ctx.step.run("b", shaky),
        )
        return list(results)

    async with TestEngine(client, [fan_retry], database_url=database_url) as engine:
        run_id = await start(engine, "test/fan-retry")
        await engine.run_until_idle()
        assert calls == {"a": 1, "b": 1}
        await engine.advance(timedelta(minutes=5))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == ["A", "B"]
    assert calls == {"a": 1, "b": 2}
    assert step_named(run, "a").attempts == 1
    assert step_named(run, "b").attempts == 2


async def test_parallel_branch_failing_for_good_raises_step_error(database_url: str) -> None:
    client = stepline.Stepline(app_id="parallel-fail")
    calls: Counter[str] = Counter()

    def good() -> str:
        calls["good"] += 1
        return "fine"

    def bad() -> str:
        calls["bad"] += 1
        raise RuntimeError("branch broke")

    @client.function(id="fan-fail", trigger=stepline.on_event("test/fan-fail"), retries=1)
    async def fan_fail(ctx: stepline.Context) -> str:
        try:
            await ctx.step.parallel(lambda: ctx.step.run("good", good), lambda: ctx.step.run("bad", bad))
        except stepline.StepError as exc:
            return f"caught: {exc.message}"
        return "not caught"

    async with TestEngine(client, [fan_fail], database_url=database_url) as engine:
        run_id = await start(engine, "test/fan-fail")
        await engine.advance(timedelta(minutes=5))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "caught: branch broke"
    assert calls == {"good": 1, "bad": 2}


async def test_parallel_in_sync_function(database_url: str) -> None:
    client = stepline.Stepline(app_id="parallel-sync")
    calls: Counter[str] = Counter()

    def work(name: str) -> str:
        calls[name] += 1
        return name.upper()

    @client.function(id="fan-sync", trigger=stepline.on_event("test/fan-sync"))
    def fan_sync(ctx: stepline.ContextSync) -> list[str]:
        results = ctx.step.parallel(
            lambda: ctx.step.run("x", work, "x"),
            lambda: ctx.step.run("y", work, "y"),
            lambda: ctx.step.run("z", work, "z"),
        )
        return list(results)

    async with TestEngine(client, [fan_sync], database_url=database_url) as engine:
        run_id = await start(engine, "test/fan-sync")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == ["X", "Y", "Z"]
    assert calls == {"x": 1, "y": 1, "z": 1}
