"""Tracked tasks meet flow control: a task always ends, and says why when flow control turned
its run away (rate limit, a later debounced event, concurrency holding it back)."""

from __future__ import annotations

from datetime import timedelta

import stepline
from stepline.testing import TestEngine


async def test_a_rate_limited_task_fails_at_once_with_the_reason(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-rate")

    @client.function(
        id="tailor",
        trigger=stepline.on_event("test/tailor"),
        rate_limit=stepline.RateLimit(limit=1, period=timedelta(hours=1), key="event.data.user"),
    )
    async def tailor(ctx: stepline.Context) -> str:
        return "done"

    async with TestEngine(client, [tailor], database_url=database_url) as engine:
        first = await client.tasks.enqueue(kind="k", owner="u", event=stepline.Event("test/tailor", {"user": "u"}))
        second = await client.tasks.enqueue(kind="k", owner="u", event=stepline.Event("test/tailor", {"user": "u"}))
        await engine.run_until_idle()
        done = await client.tasks.get(first.id)
        refused = await client.tasks.get(second.id)

    assert done is not None
    assert done.status == "complete"
    assert second.status == "failed"  # the enqueue itself answers with the verdict
    assert refused is not None
    assert refused.status == "failed"
    assert refused.reason is not None
    assert refused.reason.startswith("rate limit")


async def test_a_task_whose_debounced_run_is_replaced_fails_and_the_last_completes(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-debounce")

    @client.function(
        id="save",
        trigger=stepline.on_event("test/save"),
        debounce=stepline.Debounce(period=timedelta(seconds=10), key="event.data.doc"),
    )
    async def save(ctx: stepline.Context) -> int:
        return int(ctx.event.data["n"])

    async with TestEngine(client, [save], database_url=database_url) as engine:
        early = await client.tasks.enqueue(kind="k", owner="u", event=stepline.Event("test/save", {"doc": 1, "n": 1}))
        late = await client.tasks.enqueue(kind="k", owner="u", event=stepline.Event("test/save", {"doc": 1, "n": 2}))
        replaced = await client.tasks.get(early.id)
        await engine.advance(timedelta(seconds=11))
        finished = await client.tasks.get(late.id)

    assert replaced is not None
    assert replaced.status == "failed"
    assert replaced.reason is not None
    assert "debounce" in replaced.reason
    assert finished is not None
    assert finished.status == "complete"
    assert finished.result == 2


async def test_a_task_held_back_by_concurrency_stays_pending_then_completes(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-concurrency")

    @client.function(
        id="embed",
        trigger=stepline.on_event("test/embed"),
        concurrency=[stepline.Concurrency(limit=1)],
    )
    async def embed(ctx: stepline.Context) -> str:
        await ctx.step.run("work", lambda: "ok")
        return "embedded"

    async with TestEngine(client, [embed], database_url=database_url) as engine:
        made = [
            await client.tasks.enqueue(kind="k", owner="u", event=stepline.Event("test/embed", {"n": n}))
            for n in range(3)
        ]
        await engine.run_until_idle()
        ended = [await client.tasks.get(task.id) for task in made]

    assert [task.status if task else None for task in ended] == ["complete"] * 3
