"""Throttle (run starts beyond the rate wait their turn) and priority (head start in the queue)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import stepline
from stepline import errors
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.flow_support import with_flow
from tests.engine.support import get_run


def recorder(client: stepline.Stepline, order: list[str]) -> stepline.Function:
    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> None:
        await ctx.step.run("note", lambda: order.append(str(ctx.event.data.get("name"))))

    return work


async def start_offsets(engine: TestEngine, run_ids: list[str], t0: int) -> list[int | None]:
    runs = [await get_run(engine, run_id) for run_id in run_ids]
    return [None if run.started_at is None else run.started_at - t0 for run in runs]


async def test_throttled_starts_are_spread_over_the_period(database_url: str) -> None:
    client = stepline.Stepline(app_id="throttle-spread")
    work = with_flow(recorder(client, []), throttle={"limit": 2, "period": "1m"})
    async with TestEngine(client, [work], database_url=database_url) as engine:
        t0 = engine.fake_clock.now_ms()
        result = await engine.send([stepline.Event("test/work", {"name": n}) for n in range(4)])
        await engine.run_until_idle()
        assert await start_offsets(engine, result.run_ids, t0) == [0, None, None, None]
        await engine.advance(timedelta(minutes=2))
        offsets = await start_offsets(engine, result.run_ids, t0)
        statuses = {(await get_run(engine, run_id)).status for run_id in result.run_ids}

    # 2 per minute, no burst: one start every 30 s, nothing dropped.
    assert offsets == [0, 30_000, 60_000, 90_000]
    assert statuses == {RunStatus.COMPLETED}


async def test_a_burst_starts_at_once_then_the_rate_applies(database_url: str) -> None:
    client = stepline.Stepline(app_id="throttle-burst")
    work = with_flow(recorder(client, []), throttle={"limit": 1, "period": "10s", "burst": 3})
    async with TestEngine(client, [work], database_url=database_url) as engine:
        t0 = engine.fake_clock.now_ms()
        result = await engine.send([stepline.Event("test/work") for _ in range(5)])
        await engine.advance(timedelta(minutes=1))
        offsets = await start_offsets(engine, result.run_ids, t0)

    assert offsets == [0, 0, 0, 10_000, 20_000]


async def test_each_throttle_key_has_its_own_rate(database_url: str) -> None:
    client = stepline.Stepline(app_id="throttle-key")
    work = with_flow(recorder(client, []), throttle={"limit": 1, "period": "1m", "key": "event.data.user"})
    async with TestEngine(client, [work], database_url=database_url) as engine:
        t0 = engine.fake_clock.now_ms()
        result = await engine.send([stepline.Event("test/work", {"user": user}) for user in "abab"])
        await engine.advance(timedelta(minutes=2))
        offsets = await start_offsets(engine, result.run_ids, t0)

    assert offsets == [0, 0, 60_000, 60_000]


async def test_after_a_quiet_spell_the_next_start_is_immediate(database_url: str) -> None:
    """The state is time, not a counter: after a quiet spell the next start is immediate."""
    client = stepline.Stepline(app_id="throttle-recover")
    work = with_flow(recorder(client, []), throttle={"limit": 1, "period": "1m"})
    async with TestEngine(client, [work], database_url=database_url) as engine:
        t0 = engine.fake_clock.now_ms()
        first = await engine.send(stepline.Event("test/work"))
        await engine.advance(timedelta(minutes=5))
        later = await engine.send(stepline.Event("test/work"))
        await engine.run_until_idle()
        offsets = await start_offsets(engine, first.run_ids + later.run_ids, t0)

    assert offsets == [0, 300_000]


async def test_priority_gives_a_head_start_in_the_queue(database_url: str) -> None:
    client = stepline.Stepline(app_id="priority-order")
    order: list[str] = []
    work = with_flow(
        recorder(client, order),
        priority={"run": "event.data.plan == 'pro' ? 120 : 0"},
        concurrency=1,  # one at a time, so the queue's order is the order they run in
    )
    async with TestEngine(client, [work], database_url=database_url) as engine:
        await engine.send(stepline.Event("test/work", {"name": "free-1", "plan": "free"}))
        await engine.send(stepline.Event("test/work", {"name": "free-2", "plan": "free"}))
        await engine.send(stepline.Event("test/work", {"name": "pro", "plan": "pro"}))
        await engine.run_until_idle()

    assert order == ["pro", "free-1", "free-2"]


async def test_a_negative_priority_waits_its_seconds_at_most_600(database_url: str) -> None:
    client = stepline.Stepline(app_id="priority-late")
    order: list[str] = []
    work = with_flow(recorder(client, order), priority={"run": "event.data.p"})
    async with TestEngine(client, [work], database_url=database_url) as engine:
        await engine.send(stepline.Event("test/work", {"name": "a-minute", "p": -60}))
        await engine.send(stepline.Event("test/work", {"name": "clamped", "p": -5000}))
        await engine.send(stepline.Event("test/work", {"name": "no-number", "p": "high"}))
        await engine.run_until_idle()
        assert order == ["no-number"]
        await engine.advance(timedelta(seconds=60))
        assert order == ["no-number", "a-minute"]
        await engine.advance(timedelta(seconds=540))  # -5000 s is read as the minimum, -600 s

    assert order == ["no-number", "a-minute", "clamped"]


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        ({"throttle": {"limit": 0, "period": "1m"}}, "throttle limit must be a positive integer"),
        ({"throttle": {"limit": 1, "period": "500ms"}}, "throttle period must be a time string from 1s"),
        ({"throttle": {"limit": 1, "period": "soon"}}, "throttle period"),
        ({"throttle": {"limit": 1, "period": "1m", "key": "event.data.["}}, "throttle key"),
        ({"priority": {"run": "event.data.("}}, "priority run"),
        ({"priority": {"run": "700"}}, "priority run must be between -600 and 600"),
    ],
)
def test_bad_throttle_or_priority_is_refused_when_the_engine_is_built(flow: dict[str, object], message: str) -> None:
    client = stepline.Stepline(app_id="flow-bad")
    work = with_flow(recorder(client, []), **flow)

    with pytest.raises(errors.ConfigurationError, match=message) as caught:
        TestEngine(client, [work])
    assert "flow-bad-work" in str(caught.value)
