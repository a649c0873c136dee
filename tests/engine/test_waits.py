"""Sleeps and waits: nothing happens until the fake clock or a matching event says so."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_names


async def test_sleep_resumes_only_after_its_duration(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-sleep")
    calls: Counter[str] = Counter()

    @client.function(id="nap", trigger=stepline.on_event("test/nap"))
    async def nap(ctx: stepline.Context) -> str:
        await ctx.step.run("before", lambda: calls.update(["before"]))
        await ctx.step.sleep("s", timedelta(hours=1))
        await ctx.step.run("after", lambda: calls.update(["after"]))
        return "awake"

    async with TestEngine(client, [nap], database_url=database_url) as engine:
        run_id = await start(engine, "test/nap")
        await engine.run_until_idle()
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.advance(timedelta(minutes=59))
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        assert calls == {"before": 1}
        await engine.advance(timedelta(minutes=2))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "awake"
    assert calls == {"before": 1, "after": 1}
    assert step_names(run) == ["before", "s", "after"]
    sleep_step = run.steps[1]
    assert sleep_step.kind == "sleep"
    assert sleep_step.ended_at - sleep_step.started_at >= 3_600_000


async def test_sleep_in_sync_function(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-sleep-sync")
    calls: Counter[str] = Counter()

    @client.function(id="nap-sync", trigger=stepline.on_event("test/nap-sync"))
    def nap(ctx: stepline.ContextSync) -> str:
        ctx.step.sleep("s", timedelta(minutes=30))
        ctx.step.run("after", lambda: calls.update(["after"]))
        return "awake"

    async with TestEngine(client, [nap], database_url=database_url) as engine:
        run_id = await start(engine, "test/nap-sync")
        await engine.advance(timedelta(minutes=29))
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        assert calls == {}
        await engine.advance(timedelta(minutes=2))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert calls == {"after": 1}


async def test_sleep_until_resumes_at_the_given_time(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-sleep-until")
    calls: Counter[str] = Counter()

    @client.function(id="until", trigger=stepline.on_event("test/until"))
    async def until(ctx: stepline.Context) -> str:
        wake_at = datetime.fromisoformat(ctx.event.data["wake_at"])
        await ctx.step.sleep_until("until", wake_at)
        await ctx.step.run("after", lambda: calls.update(["after"]))
        return "woke"

    async with TestEngine(client, [until], database_url=database_url) as engine:
        now = datetime.fromtimestamp(engine.fake_clock.now_ms() / 1000, tz=UTC)
        run_id = await start(engine, "test/until", {"wake_at": (now + timedelta(hours=2)).isoformat()})
        await engine.run_until_idle()
        await engine.advance(timedelta(minutes=119))
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        assert calls == {}
        await engine.advance(timedelta(minutes=2))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "woke"
    assert calls == {"after": 1}
    assert step_names(run) == ["until", "after"]


async def test_sleep_until_a_past_time_continues_at_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-sleep-past")

    @client.function(id="past", trigger=stepline.on_event("test/past"))
    async def past(ctx: stepline.Context) -> str:
        await ctx.step.sleep_until("past", datetime(2000, 1, 1, tzinfo=UTC))
        return "no wait"

    async with TestEngine(client, [past], database_url=database_url) as engine:
        run_id = await start(engine, "test/past")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "no wait"


def _approval_function(client: stepline.Stepline, seen: list[Any], timeout: timedelta = timedelta(hours=1)) -> Any:
    @client.function(id="approval", trigger=stepline.on_event("test/task.created"))
    async def approval(ctx: stepline.Context) -> dict[str, Any]:
        await ctx.step.run("created", lambda: ctx.event.data["task_id"])
        approved = await ctx.step.wait_for_event(
            "wait-approval",
            event="test/task.approved",
            if_exp="async.data.task_id == event.data.task_id",
            timeout=timeout,
        )
        seen.append(approved)
        if approved is None:
            return {"approved": False}
        return {"approved": True, "by": approved.data["by"], "name": approved.name}

    return approval


async def test_wait_for_event_resumes_on_a_matching_event(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-event")
    seen: list[Any] = []
    approval = _approval_function(client, seen)

    async with TestEngine(client, [approval], database_url=database_url) as engine:
        run_id = await start(engine, "test/task.created", {"task_id": "t1"})
        await engine.run_until_idle()
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        result = await engine.send(stepline.Event("test/task.approved", {"task_id": "t1", "by": "ana"}))
        assert result.run_ids == []  # nothing is triggered by it; it resumes the wait
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"approved": True, "by": "ana", "name": "test/task.approved"}
    event = seen[-1]
    assert isinstance(event, stepline.Event)
    assert event.data == {"task_id": "t1", "by": "ana"}
    assert event.name == "test/task.approved"


async def test_wait_for_event_ignores_a_non_matching_event(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-event-nomatch")
    seen: list[Any] = []
    approval = _approval_function(client, seen)

    async with TestEngine(client, [approval], database_url=database_url) as engine:
        run_id = await start(engine, "test/task.created", {"task_id": "t1"})
        await engine.run_until_idle()
        await engine.send(stepline.Event("test/task.approved", {"task_id": "other", "by": "bob"}))
        await engine.send(stepline.Event("test/task.rejected", {"task_id": "t1", "by": "bob"}))
        await engine.run_until_idle()
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.send(stepline.Event("test/task.approved", {"task_id": "t1", "by": "cy"}))
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"approved": True, "by": "cy", "name": "test/task.approved"}


async def test_wait_for_event_only_matches_its_own_run(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-event-two-runs")
    seen: list[Any] = []
    approval = _approval_function(client, seen)

    async with TestEngine(client, [approval], database_url=database_url) as engine:
        first = await start(engine, "test/task.created", {"task_id": "t1"})
        second = await start(engine, "test/task.created", {"task_id": "t2"})
        await engine.run_until_idle()
        await engine.send(stepline.Event("test/task.approved", {"task_id": "t2", "by": "dee"}))
        await engine.run_until_idle()
        first_run = await get_run(engine, first)
        second_run = await get_run(engine, second)

    assert first_run.status is RunStatus.RUNNING
    assert second_run.status is RunStatus.COMPLETED
    assert second_run.output == {"approved": True, "by": "dee", "name": "test/task.approved"}


async def test_wait_for_event_returns_none_on_timeout(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-event-timeout")
    seen: list[Any] = []
    approval = _approval_function(client, seen, timeout=timedelta(hours=1))

    async with TestEngine(client, [approval], database_url=database_url) as engine:
        run_id = await start(engine, "test/task.created", {"task_id": "t1"})
        await engine.advance(timedelta(minutes=59))
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.advance(timedelta(minutes=2))
        run = await get_run(engine, run_id)
        # a matching event after the timeout changes nothing
        await engine.send(stepline.Event("test/task.approved", {"task_id": "t1", "by": "late"}))
        await engine.run_until_idle()
        after = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"approved": False}
    assert seen[-1] is None
    assert step_names(run) == ["created", "wait-approval"]
    assert run.steps[1].kind == "wait"
    assert run.steps[1].output is None
    assert after.output == {"approved": False}


async def test_event_sent_before_the_wait_does_not_match(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-event-early")
    calls: Counter[str] = Counter()

    @client.function(id="late-wait", trigger=stepline.on_event("test/order.placed"))
    async def late_wait(ctx: stepline.Context) -> str:
        await ctx.step.sleep("first-sleep", timedelta(minutes=10))
        paid = await ctx.step.wait_for_event(
            "wait-paid",
            event="test/order.paid",
            if_exp="async.data.order == event.data.order",
            timeout=timedelta(hours=1),
        )
        calls["resumed"] += 1
        return "paid" if paid is not None else "timed out"

    async with TestEngine(client, [late_wait], database_url=database_url) as engine:
        run_id = await start(engine, "test/order.placed", {"order": "o1"})
        await engine.run_until_idle()
        await engine.send(stepline.Event("test/order.paid", {"order": "o1"}))  # before the wait exists
        await engine.advance(timedelta(minutes=11))  # the wait is now registered
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.advance(timedelta(hours=1))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "timed out"


async def test_wait_for_event_in_sync_function(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-event-sync")

    @client.function(id="sync-wait", trigger=stepline.on_event("test/sync.start"))
    def sync_wait(ctx: stepline.ContextSync) -> Any:
        got = ctx.step.wait_for_event("w", event="test/sync.go", timeout=timedelta(minutes=5))
        return None if got is None else got.data

    async with TestEngine(client, [sync_wait], database_url=database_url) as engine:
        run_id = await start(engine, "test/sync.start")
        await engine.run_until_idle()
        await engine.send(stepline.Event("test/sync.go", {"x": 1}))
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"x": 1}


async def test_wait_resumed_by_event_is_listed_under_its_name(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-step-name")
    seen: list[Any] = []
    approval = _approval_function(client, seen)

    async with TestEngine(client, [approval], database_url=database_url) as engine:
        run_id = await start(engine, "test/task.created", {"task_id": "t1"})
        await engine.run_until_idle()
        await engine.send(stepline.Event("test/task.approved", {"task_id": "t1", "by": "ana"}))
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert step_names(run) == ["created", "wait-approval"]


async def test_sleep_accepts_duration_strings_and_seconds(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-durations")
    calls: Counter[str] = Counter()

    @client.function(id="durations", trigger=stepline.on_event("test/durations"))
    async def durations(ctx: stepline.Context) -> str:
        await ctx.step.sleep("text", "2h")
        calls["after-text"] += 1
        await ctx.step.sleep("seconds", 90.0)
        calls["after-seconds"] += 1
        return "done"

    async with TestEngine(client, [durations], database_url=database_url) as engine:
        run_id = await start(engine, "test/durations")
        await engine.advance(timedelta(minutes=119))
        assert calls["after-text"] == 0
        await engine.advance(timedelta(minutes=1, seconds=1))
        assert calls["after-text"] >= 1
        assert calls["after-seconds"] == 0
        await engine.advance(timedelta(seconds=85))
        assert calls["after-seconds"] == 0
        await engine.advance(timedelta(seconds=10))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert step_names(run) == ["text", "seconds"]


async def test_parallel_sleep_wait_and_step(database_url: str) -> None:
    client = stepline.Stepline(app_id="wait-parallel")
    calls: Counter[str] = Counter()

    def work() -> str:
        calls["work"] += 1
        return "worked"

    @client.function(id="mixed", trigger=stepline.on_event("test/mixed"))
    async def mixed(ctx: stepline.Context) -> list[Any]:
        slept, worked, waited = await ctx.step.parallel(
            lambda: ctx.step.sleep("nap", timedelta(minutes=1)),
            lambda: ctx.step.run("work", work),
            lambda: ctx.step.wait_for_event("signal", event="test/signal", timeout=timedelta(minutes=10)),
        )
        return [slept, worked, None if waited is None else waited.data]

    async with TestEngine(client, [mixed], database_url=database_url) as engine:
        run_id = await start(engine, "test/mixed")
        await engine.run_until_idle()
        assert calls == {"work": 1}
        await engine.advance(timedelta(minutes=2))
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING  # still waiting for the signal
        await engine.send(stepline.Event("test/signal", {"go": True}))
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == [None, "worked", {"go": True}]
    assert calls == {"work": 1}
