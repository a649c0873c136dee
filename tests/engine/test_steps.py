"""Memoized steps: each step callable runs once, results replay, steps are listed in order."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_names


async def test_async_function_runs_each_step_once_and_returns_output(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-async")
    calls: Counter[str] = Counter()

    @client.function(id="three", trigger=stepline.on_event("test/three"))
    async def three(ctx: stepline.Context) -> dict[str, Any]:
        def first() -> int:
            calls["first"] += 1
            return int(ctx.event.data["n"])

        async def second(value: int) -> int:
            calls["second"] += 1
            return value * 10

        def third(a: int, b: int) -> str:
            calls["third"] += 1
            return f"{a}+{b}"

        a = await ctx.step.run("first", first)
        b = await ctx.step.run("second", second, a)
        c = await ctx.step.run("third", third, a, b)
        return {"a": a, "b": b, "c": c}

    async with TestEngine(client, [three], database_url=database_url) as engine:
        run_id = await start(engine, "test/three", {"n": 4})
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"a": 4, "b": 40, "c": "4+40"}
    assert run.error is None
    assert calls == {"first": 1, "second": 1, "third": 1}
    assert step_names(run) == ["first", "second", "third"]
    assert [step.output for step in run.steps] == [4, 40, "4+40"]
    assert [step.attempts for step in run.steps] == [1, 1, 1]
    assert all(step.error is None for step in run.steps)


async def test_sync_function_runs_each_step_once_and_returns_output(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-sync")
    calls: Counter[str] = Counter()

    @client.function(id="three-sync", trigger=stepline.on_event("test/three-sync"))
    def three(ctx: stepline.ContextSync) -> dict[str, Any]:
        def first() -> int:
            calls["first"] += 1
            return 2

        def second(value: int) -> int:
            calls["second"] += 1
            return value + 1

        def third(value: int) -> list[int]:
            calls["third"] += 1
            return [value] * value

        a = ctx.step.run("first", first)
        b = ctx.step.run("second", second, a)
        c = ctx.step.run("third", third, b)
        return {"a": a, "b": b, "c": c}

    async with TestEngine(client, [three], database_url=database_url) as engine:
        run_id = await start(engine, "test/three-sync")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"a": 2, "b": 3, "c": [3, 3, 3]}
    assert calls == {"first": 1, "second": 1, "third": 1}
    assert step_names(run) == ["first", "second", "third"]


async def test_steps_replay_across_calls_without_rerunning(database_url: str) -> None:
    """A sleep ends the call: the next call replays the recorded steps from the memo."""
    client = stepline.Stepline(app_id="steps-replay")
    calls: Counter[str] = Counter()

    @client.function(id="replay", trigger=stepline.on_event("test/replay"))
    async def replay(ctx: stepline.Context) -> list[int]:
        calls["body"] += 1

        def one() -> int:
            calls["one"] += 1
            return 1

        def two() -> int:
            calls["two"] += 1
            return 2

        a = await ctx.step.run("one", one)
        await ctx.step.sleep("nap", timedelta(seconds=30))
        b = await ctx.step.run("two", two)
        return [a, b]

    async with TestEngine(client, [replay], database_url=database_url) as engine:
        run_id = await start(engine, "test/replay")
        await engine.run_until_idle()
        await engine.advance(timedelta(minutes=1))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == [1, 2]
    assert calls["one"] == 1
    assert calls["two"] == 1
    assert calls["body"] >= 2  # the body ran again after the sleep, replaying "one"
    assert step_names(run) == ["one", "nap", "two"]


async def test_step_callables_sync_and_async_with_positional_and_keyword_args(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-args")
    received: list[tuple[str, Any, Any]] = []

    def sync_fn(a: int, b: int, *, scale: int = 1, label: str = "") -> dict[str, Any]:
        received.append(("sync", (a, b), {"scale": scale, "label": label}))
        return {"sum": (a + b) * scale, "label": label}

    async def async_fn(text: str, *, repeat: int) -> str:
        received.append(("async", (text,), {"repeat": repeat}))
        return text * repeat

    @client.function(id="args", trigger=stepline.on_event("test/args"))
    async def with_args(ctx: stepline.Context) -> list[Any]:
        x = await ctx.step.run("sync-kw", sync_fn, 1, 2, scale=3, label="hi")
        y = await ctx.step.run("async-kw", async_fn, "ab", repeat=2)
        z = await ctx.step.run("sync-pos", sync_fn, 5, 6)
        w = await ctx.step.run("lambda", lambda: "from a lambda")
        return [x, y, z, w]

    async with TestEngine(client, [with_args], database_url=database_url) as engine:
        run_id = await start(engine, "test/args")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == [{"sum": 9, "label": "hi"}, "abab", {"sum": 11, "label": ""}, "from a lambda"]
    assert received == [
        ("sync", (1, 2), {"scale": 3, "label": "hi"}),
        ("async", ("ab",), {"repeat": 2}),
        ("sync", (5, 6), {"scale": 1, "label": ""}),
    ]


async def test_sync_function_step_args(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-sync-args")
    calls: Counter[str] = Counter()

    def add(a: int, b: int, *, times: int) -> int:
        calls["add"] += 1
        return (a + b) * times

    @client.function(id="sync-args", trigger=stepline.on_event("test/sync-args"))
    def with_args(ctx: stepline.ContextSync) -> int:
        return ctx.step.run("add", add, 2, 3, times=4)

    async with TestEngine(client, [with_args], database_url=database_url) as engine:
        run_id = await start(engine, "test/sync-args")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == 20
    assert calls == {"add": 1}


async def test_repeated_step_ids_get_distinct_memo_entries(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-repeat")
    calls: list[int] = []

    def bump(value: int) -> int:
        calls.append(value)
        return value

    @client.function(id="repeat", trigger=stepline.on_event("test/repeat"))
    async def repeat(ctx: stepline.Context) -> list[int]:
        first = await ctx.step.run("x", bump, 1)
        await ctx.step.sleep("between", timedelta(seconds=1))  # force a replay of both "x"s
        second = await ctx.step.run("x", bump, 2)
        return [first, second]

    async with TestEngine(client, [repeat], database_url=database_url) as engine:
        run_id = await start(engine, "test/repeat")
        await engine.run_until_idle()
        await engine.advance(timedelta(seconds=5))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == [1, 2]
    assert calls == [1, 2]
    assert step_names(run) == ["x", "between", "x"]
    x_steps = [step for step in run.steps if step.name == "x"]
    assert [step.output for step in x_steps] == [1, 2]
    assert x_steps[0].id != x_steps[1].id


async def test_repeated_step_ids_in_sync_function(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-repeat-sync")
    calls: list[str] = []

    def tag(value: str) -> str:
        calls.append(value)
        return value

    @client.function(id="repeat-sync", trigger=stepline.on_event("test/repeat-sync"))
    def repeat(ctx: stepline.ContextSync) -> list[str]:
        return [ctx.step.run("x", tag, "a"), ctx.step.run("x", tag, "b"), ctx.step.run("x", tag, "c")]

    async with TestEngine(client, [repeat], database_url=database_url) as engine:
        run_id = await start(engine, "test/repeat-sync")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == ["a", "b", "c"]
    assert calls == ["a", "b", "c"]
    assert len({step.id for step in run.steps}) == 3


async def test_function_without_steps_completes(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-none")

    @client.function(id="plain", trigger=stepline.on_event("test/plain"))
    async def plain(ctx: stepline.Context) -> dict[str, Any]:
        return {"echo": ctx.event.data, "run_id": ctx.run_id}

    async with TestEngine(client, [plain], database_url=database_url) as engine:
        run_id = await start(engine, "test/plain", {"k": "v"})
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"echo": {"k": "v"}, "run_id": run_id}
    assert run.steps == []
    assert run.event["name"] == "test/plain"
    assert run.event["data"] == {"k": "v"}


async def test_wait_for_run_drives_a_run_to_completion(database_url: str) -> None:
    client = stepline.Stepline(app_id="steps-wait-for-run")

    @client.function(id="quick", trigger=stepline.on_event("test/quick"))
    async def quick(ctx: stepline.Context) -> int:
        return await ctx.step.run("one", lambda: 1) + 1

    async with TestEngine(client, [quick], database_url=database_url) as engine:
        run_id = await start(engine, "test/quick")
        run = await engine.wait_for_run(run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == 2
