"""Event triggers and idempotency, cancelling runs, and checkpointing on versus off."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_names


async def test_events_with_the_same_id_start_the_function_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-idempotent")
    calls: Counter[str] = Counter()

    @client.function(id="charge", trigger=stepline.on_event("test/charge"))
    async def charge(ctx: stepline.Context) -> None:
        calls["charge"] += 1

    async with TestEngine(client, [charge], database_url=database_url) as engine:
        first = await engine.send(stepline.Event("test/charge", {"amount": 5}, id="charge-1"))
        second = await engine.send(stepline.Event("test/charge", {"amount": 5}, id="charge-1"))
        await engine.run_until_idle()
        other = await engine.send(stepline.Event("test/charge", {"amount": 5}, id="charge-2"))
        await engine.run_until_idle()

    assert len(first.run_ids) == 1
    assert second.run_ids == []
    assert first.event_ids == ["charge-1"]
    assert second.event_ids == ["charge-1"]
    assert len(other.run_ids) == 1
    assert calls == {"charge": 2}


async def test_duplicate_ids_in_one_batch_start_the_function_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-idempotent-batch")
    calls: Counter[str] = Counter()

    @client.function(id="charge", trigger=stepline.on_event("test/charge"))
    async def charge(ctx: stepline.Context) -> None:
        calls["charge"] += 1

    async with TestEngine(client, [charge], database_url=database_url) as engine:
        result = await engine.send([stepline.Event("test/charge", id="same"), stepline.Event("test/charge", id="same")])
        await engine.run_until_idle()

    assert len(result.run_ids) == 1
    assert calls == {"charge": 1}


async def test_events_without_ids_each_start_a_run(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-no-id")
    calls: Counter[str] = Counter()

    @client.function(id="count", trigger=stepline.on_event("test/count"))
    async def count(ctx: stepline.Context) -> None:
        calls["count"] += 1

    async with TestEngine(client, [count], database_url=database_url) as engine:
        result = await engine.send([stepline.Event("test/count"), stepline.Event("test/count")])
        await engine.run_until_idle()

    assert len(result.run_ids) == 2
    assert len(set(result.event_ids)) == 2
    assert calls == {"count": 2}


async def test_trigger_expression_filters_events(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-filter")
    plans: list[str] = []

    @client.function(id="pro-only", trigger=stepline.on_event("test/signup", if_exp="event.data.plan == 'pro'"))
    async def pro_only(ctx: stepline.Context) -> None:
        plans.append(ctx.event.data["plan"])

    async with TestEngine(client, [pro_only], database_url=database_url) as engine:
        free = await engine.send(stepline.Event("test/signup", {"plan": "free"}))
        missing = await engine.send(stepline.Event("test/signup", {}))
        pro = await engine.send(stepline.Event("test/signup", {"plan": "pro"}))
        await engine.run_until_idle()

    assert free.run_ids == []
    assert missing.run_ids == []
    assert len(pro.run_ids) == 1
    assert plans == ["pro"]


async def test_an_event_matching_two_functions_starts_both(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-fan")
    started: list[str] = []

    @client.function(id="welcome", trigger=stepline.on_event("test/user.created"))
    async def welcome(ctx: stepline.Context) -> None:
        started.append("welcome")

    @client.function(id="audit", trigger=stepline.on_event("test/user.created", if_exp="event.data.id > 0"))
    async def audit(ctx: stepline.Context) -> None:
        started.append("audit")

    @client.function(id="unrelated", trigger=stepline.on_event("test/user.deleted"))
    async def unrelated(ctx: stepline.Context) -> None:
        started.append("unrelated")

    async with TestEngine(client, [welcome, audit, unrelated], database_url=database_url) as engine:
        result = await engine.send(stepline.Event("test/user.created", {"id": 7}))
        await engine.run_until_idle()
        runs = [await get_run(engine, run_id) for run_id in result.run_ids]

    assert len(result.run_ids) == 2
    assert sorted(started) == ["audit", "welcome"]
    assert sorted(run.function_id for run in runs) == ["flow-fan-audit", "flow-fan-welcome"]
    assert all(run.status is RunStatus.COMPLETED for run in runs)


async def test_function_with_several_triggers(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-multi")
    names: list[str] = []

    @client.function(id="multi", triggers=[stepline.on_event("test/one"), stepline.on_event("test/two")])
    async def multi(ctx: stepline.Context) -> None:
        names.append(ctx.event.name)

    async with TestEngine(client, [multi], database_url=database_url) as engine:
        await start(engine, "test/one")
        await start(engine, "test/two")
        await engine.run_until_idle()

    assert sorted(names) == ["test/one", "test/two"]


async def test_cancel_a_sleeping_run(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel")
    calls: Counter[str] = Counter()

    @client.function(id="sleepy", trigger=stepline.on_event("test/sleepy"))
    async def sleepy(ctx: stepline.Context) -> str:
        await ctx.step.run("before", lambda: calls.update(["before"]))
        await ctx.step.sleep("s", timedelta(hours=1))
        await ctx.step.run("after", lambda: calls.update(["after"]))
        return "done"

    async with TestEngine(client, [sleepy], database_url=database_url) as engine:
        run_id = await start(engine, "test/sleepy")
        await engine.run_until_idle()
        assert await engine.cancel_run(run_id) is True
        cancelled = await get_run(engine, run_id)
        await engine.advance(timedelta(hours=3))
        later = await get_run(engine, run_id)
        again = await engine.cancel_run(run_id)

    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.status.value == "cancelled"
    assert later.status is RunStatus.CANCELLED
    assert calls == {"before": 1}
    assert step_names(later) == ["before"]
    assert again is False


async def test_cancel_a_waiting_run_ignores_the_event(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel-wait")
    calls: Counter[str] = Counter()

    @client.function(id="waiter", trigger=stepline.on_event("test/waiter"))
    async def waiter(ctx: stepline.Context) -> None:
        await ctx.step.wait_for_event("w", event="test/wake", timeout=timedelta(hours=1))
        calls["after"] += 1

    async with TestEngine(client, [waiter], database_url=database_url) as engine:
        run_id = await start(engine, "test/waiter")
        await engine.run_until_idle()
        assert await engine.cancel_run(run_id) is True
        await engine.send(stepline.Event("test/wake"))
        await engine.advance(timedelta(hours=2))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.CANCELLED
    assert calls == {}


async def test_cancel_a_finished_run_returns_false(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel-done")

    @client.function(id="quick", trigger=stepline.on_event("test/quick"))
    async def quick(ctx: stepline.Context) -> int:
        return 1

    async with TestEngine(client, [quick], database_url=database_url) as engine:
        run_id = await start(engine, "test/quick")
        await engine.run_until_idle()
        assert await engine.cancel_run(run_id) is False
        run = await get_run(engine, run_id)
        with pytest.raises(stepline.RunNotFoundError):
            await engine.cancel_run("no-such-run")

    assert run.status is RunStatus.COMPLETED
    assert run.output == 1


async def test_cancel_a_queued_run_before_it_starts(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel-queued")
    calls: Counter[str] = Counter()

    @client.function(id="never", trigger=stepline.on_event("test/never"))
    async def never(ctx: stepline.Context) -> None:
        calls["body"] += 1

    async with TestEngine(client, [never], database_url=database_url) as engine:
        run_id = await start(engine, "test/never")
        assert await engine.cancel_run(run_id) is True
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.CANCELLED
    assert calls == {}


def _pipeline(client: stepline.Stepline, calls: Counter[str]) -> Any:
    def step(name: str, value: int) -> int:
        calls[name] += 1
        if name == "flaky" and calls[name] == 1:
            raise RuntimeError("flaky once")
        return value + 1

    @client.function(id="pipeline", trigger=stepline.on_event("test/pipeline"), retries=2)
    async def pipeline(ctx: stepline.Context) -> dict[str, Any]:
        a = await ctx.step.run("a", step, "a", 0)
        b = await ctx.step.run("b", step, "b", a)
        c = await ctx.step.run("flaky", step, "flaky", b)
        await ctx.step.sleep("pause", timedelta(minutes=1))
        d = await ctx.step.run("d", step, "d", c)
        e, f = await ctx.step.parallel(
            lambda: ctx.step.run("e", step, "e", d),
            lambda: ctx.step.run("f", step, "f", d),
        )
        g = await ctx.step.run("g", step, "g", e + f)
        return {"values": [a, b, c, d, e, f, g]}

    return pipeline


async def _run_pipeline(database_url: str, *, checkpointing: bool) -> tuple[Any, Counter[str], list[str]]:
    client = stepline.Stepline(app_id="flow-checkpoint-on" if checkpointing else "flow-checkpoint-off")
    calls: Counter[str] = Counter()
    pipeline = _pipeline(client, calls)
    async with TestEngine(client, [pipeline], database_url=database_url, checkpointing=checkpointing) as engine:
        run_id = await start(engine, "test/pipeline")
        await engine.advance(timedelta(minutes=10))
        await engine.advance(timedelta(minutes=10))
        run = await get_run(engine, run_id)
    assert run.status is RunStatus.COMPLETED, run.error
    return run.output, calls, step_names(run)


async def test_checkpointing_off_and_on_give_the_same_results(database_url: str) -> None:
    on = await _run_pipeline(database_url, checkpointing=True)
    off = await _run_pipeline(database_url, checkpointing=False)  # same database, another app

    expected_output = {"values": [1, 2, 3, 4, 5, 5, 11]}
    expected_calls = {"a": 1, "b": 1, "flaky": 2, "d": 1, "e": 1, "f": 1, "g": 1}
    assert on[0] == expected_output
    assert off[0] == expected_output
    assert on[1] == expected_calls
    assert off[1] == expected_calls
    assert sorted(on[2]) == sorted(off[2]) == ["a", "b", "d", "e", "f", "flaky", "g", "pause"]
    for names in (on[2], off[2]):
        assert names[:4] == ["a", "b", "flaky", "pause"]
        assert names[-1] == "g"


async def test_one_event_id_is_an_idempotency_key_per_function(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-idempotent-two")
    started: list[str] = []

    @client.function(id="first", trigger=stepline.on_event("test/order"))
    async def first(ctx: stepline.Context) -> None:
        started.append("first")

    @client.function(id="second", trigger=stepline.on_event("test/order"))
    async def second(ctx: stepline.Context) -> None:
        started.append("second")

    async with TestEngine(client, [first, second], database_url=database_url) as engine:
        original = await engine.send(stepline.Event("test/order", id="order-9"))
        await engine.advance(timedelta(hours=23))
        duplicate = await engine.send(stepline.Event("test/order", id="order-9"))
        await engine.run_until_idle()

    assert len(original.run_ids) == 2
    assert duplicate.run_ids == []
    assert sorted(started) == ["first", "second"]


@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no-checkpointing"])
async def test_cancel_from_inside_a_step_stops_before_the_next_step(database_url: str, checkpointing: bool) -> None:
    client = stepline.Stepline(app_id="flow-cancel-inside")
    calls: Counter[str] = Counter()
    engines: list[TestEngine] = []

    @client.function(id="self-cancel", trigger=stepline.on_event("test/self-cancel"))
    async def self_cancel(ctx: stepline.Context) -> str:
        async def cancel_me() -> str:
            calls["cancel"] += 1
            assert await engines[0].cancel_run(ctx.run_id) is True
            return "cancelled"

        await ctx.step.run("cancel-me", cancel_me)
        await ctx.step.run("after", lambda: calls.update(["after"]))
        return "finished"

    async with TestEngine(client, [self_cancel], database_url=database_url, checkpointing=checkpointing) as engine:
        engines.append(engine)
        run_id = await start(engine, "test/self-cancel")
        await engine.advance(timedelta(minutes=5))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.CANCELLED
    assert run.output is None
    assert calls == {"cancel": 1}


async def test_cancel_does_not_run_on_failure(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel-no-failure")
    calls: Counter[str] = Counter()

    async def on_failure(ctx: stepline.Context) -> None:
        calls["on_failure"] += 1

    @client.function(id="sleepy", trigger=stepline.on_event("test/sleepy"), on_failure=on_failure)
    async def sleepy(ctx: stepline.Context) -> None:
        await ctx.step.sleep("s", timedelta(hours=1))

    async with TestEngine(client, [sleepy], database_url=database_url) as engine:
        run_id = await start(engine, "test/sleepy")
        await engine.run_until_idle()
        await engine.cancel_run(run_id)
        await engine.advance(timedelta(hours=2))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.CANCELLED
    assert calls == {}


async def test_many_runs_at_once_each_run_every_step_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-many")
    calls: Counter[str] = Counter()

    def work(key: str) -> str:
        calls[key] += 1
        return key

    @client.function(id="async-many", trigger=stepline.on_event("test/many"))
    async def async_many(ctx: stepline.Context) -> list[str]:
        n = ctx.event.data["n"]
        done = [await ctx.step.run(f"s{i}", work, f"a{n}-{i}") for i in range(3)]
        await ctx.step.sleep("nap", "1m")
        pair = await ctx.step.parallel(
            lambda: ctx.step.run("p1", work, f"a{n}-p1"), lambda: ctx.step.run("p2", work, f"a{n}-p2")
        )
        return done + list(pair)

    @client.function(id="sync-many", trigger=stepline.on_event("test/many"))
    def sync_many(ctx: stepline.ContextSync) -> list[str]:
        n = ctx.event.data["n"]
        done = [ctx.step.run(f"s{i}", work, f"s{n}-{i}") for i in range(3)]
        ctx.step.sleep("nap", 60.0)
        return done

    async with TestEngine(client, [async_many, sync_many], database_url=database_url) as engine:
        sent = await engine.send([stepline.Event("test/many", {"n": n}) for n in range(20)])
        await engine.run_until_idle()
        await engine.advance(timedelta(minutes=2))
        runs = [await get_run(engine, run_id) for run_id in sent.run_ids]

    assert len(runs) == 40
    assert all(run.status is RunStatus.COMPLETED for run in runs)
    assert len(calls) == 20 * 5 + 20 * 3
    assert set(calls.values()) == {1}
