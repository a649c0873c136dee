"""Flow control decided as events arrive: idempotency keys, rate limits, singletons, cancel_on,
timeouts, debounce and batches, on both backends with the fake clock."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import stepline
from stepline.storage import records
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_names


async def runs_in(engine: TestEngine, status: RunStatus) -> list[records.RunRecord]:
    """Runs in ``status``, oldest first, as ``GET /v1/runs?status=...`` lists them."""
    return list(reversed(await engine.store.list_runs(status=status, limit=200)))


async def lifecycle_events(engine: TestEngine) -> Counter[str]:
    names: Counter[str] = Counter()
    for event in await engine.store.list_events(limit=200):
        if event.name.startswith("inngest/"):
            names[event.name] += 1
    return names


# idempotency
async def test_idempotency_key_starts_one_run_per_key_per_day(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-idem-key")
    seen: list[str] = []

    @client.function(id="charge", trigger=stepline.on_event("test/charge"), idempotency="event.data.request_id")
    async def charge(ctx: stepline.Context) -> None:
        seen.append(ctx.event.data["note"])

    async with TestEngine(client, [charge], database_url=database_url) as engine:
        first = await engine.send(stepline.Event("test/charge", {"request_id": "r1", "note": "first"}))
        again = await engine.send(stepline.Event("test/charge", {"request_id": "r1", "note": "again"}))
        other = await engine.send(stepline.Event("test/charge", {"request_id": "r2", "note": "other"}))
        await engine.run_until_idle()
        await engine.advance(timedelta(hours=23))
        still = await engine.send(stepline.Event("test/charge", {"request_id": "r1", "note": "still"}))
        await engine.advance(timedelta(hours=1, seconds=1))
        later = await engine.send(stepline.Event("test/charge", {"request_id": "r1", "note": "later"}))
        await engine.run_until_idle()

    assert len(first.run_ids) == 1
    assert again.run_ids == []
    assert len(other.run_ids) == 1
    assert still.run_ids == []
    assert len(later.run_ids) == 1
    assert sorted(seen) == ["first", "later", "other"]  # runs claimed together execute concurrently


async def test_events_without_an_idempotency_key_are_not_deduplicated(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-idem-missing")
    calls: Counter[str] = Counter()

    @client.function(id="charge", trigger=stepline.on_event("test/charge"), idempotency="event.data.request_id")
    async def charge(ctx: stepline.Context) -> None:
        calls["charge"] += 1

    async with TestEngine(client, [charge], database_url=database_url) as engine:
        results = [await engine.send(stepline.Event("test/charge", {"amount": 5})) for _ in range(2)]
        await engine.run_until_idle()

    assert [len(result.run_ids) for result in results] == [1, 1]
    assert calls == {"charge": 2}


# rate limit
async def test_rate_limit_skips_runs_beyond_the_rate_and_records_why(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-rate")
    users: list[int] = []
    failures: list[str] = []

    async def on_failure(ctx: stepline.Context) -> None:
        failures.append(ctx.event.name)

    @client.function(
        id="digest",
        trigger=stepline.on_event("test/digest"),
        rate_limit=stepline.RateLimit(limit=2, period=timedelta(hours=1), key="event.data.user"),
        on_failure=on_failure,
    )
    async def digest(ctx: stepline.Context) -> None:
        users.append(ctx.event.data["user"])

    async with TestEngine(client, [digest, on_failure], database_url=database_url) as engine:
        sent = [await engine.send(stepline.Event("test/digest", {"user": 1})) for _ in range(4)]
        other_key = await engine.send(stepline.Event("test/digest", {"user": 2}))
        await engine.run_until_idle()
        skipped = await runs_in(engine, RunStatus.SKIPPED)
        lifecycle = await lifecycle_events(engine)
        await engine.advance(timedelta(minutes=31))  # one period/limit later: room for one more
        after = await engine.send(stepline.Event("test/digest", {"user": 1}))
        await engine.run_until_idle()

    assert [len(result.run_ids) for result in sent] == [1, 1, 0, 0]
    assert len(other_key.run_ids) == 1
    assert len(after.run_ids) == 1
    assert sorted(users) == [1, 1, 1, 2]
    assert len(skipped) == 2
    for run in skipped:
        assert run.error is not None
        assert run.error["name"] == "Skipped"
        assert run.error["message"] == "rate limit: more than 2 run(s) per 1h for key '1'"
        assert run.started_at is None
        assert run.ended_at is not None
    assert failures == []  # skipped runs emit no function.failed (nor finished)
    assert lifecycle == {"inngest/function.finished": 3}


# singleton
async def test_singleton_skip_skips_new_runs_while_one_is_running(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-single-skip")
    calls: Counter[str] = Counter()

    @client.function(
        id="sync",
        trigger=stepline.on_event("test/sync"),
        singleton=stepline.Singleton(mode="skip", key="event.data.account"),
    )
    async def sync(ctx: stepline.Context) -> None:
        await ctx.step.sleep("pause", timedelta(minutes=10))
        calls[ctx.event.data["n"]] += 1

    async with TestEngine(client, [sync], database_url=database_url) as engine:
        first = await start(engine, "test/sync", {"account": "a", "n": "first"})
        await engine.run_until_idle()
        second = await engine.send(stepline.Event("test/sync", {"account": "a", "n": "second"}))
        other = await engine.send(stepline.Event("test/sync", {"account": "b", "n": "other"}))
        await engine.advance(timedelta(minutes=11))
        third = await engine.send(stepline.Event("test/sync", {"account": "a", "n": "third"}))
        await engine.advance(timedelta(minutes=11))
        [skipped] = await runs_in(engine, RunStatus.SKIPPED)

    assert second.run_ids == []
    assert len(other.run_ids) == 1
    assert len(third.run_ids) == 1
    assert calls == {"first": 1, "other": 1, "third": 1}
    assert skipped.events[0]["data"]["n"] == "second"
    assert skipped.error == {"name": "Skipped", "message": f"singleton: run {first} is still running"}


async def test_singleton_cancel_cancels_the_running_run_and_starts_the_new_one(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-single-cancel")
    finished: list[str] = []

    @client.function(id="sync", trigger=stepline.on_event("test/sync"), singleton=stepline.Singleton(mode="cancel"))
    async def sync(ctx: stepline.Context) -> None:
        await ctx.step.sleep("pause", timedelta(minutes=10))
        await ctx.step.run("finish", lambda: finished.append(ctx.event.data["n"]))

    async with TestEngine(client, [sync], database_url=database_url) as engine:
        first = await start(engine, "test/sync", {"n": "first"})
        await engine.run_until_idle()
        second = await start(engine, "test/sync", {"n": "second"})
        await engine.advance(timedelta(minutes=30))
        first_run = await get_run(engine, first)
        second_run = await get_run(engine, second)
        lifecycle = await lifecycle_events(engine)

    assert finished == ["second"]  # the cancelled run never reached its next step
    assert first_run.status is RunStatus.CANCELLED
    assert first_run.error == {"name": "Cancelled", "message": f"singleton: run {second} replaced it"}
    assert step_names(first_run) == []
    assert second_run.status is RunStatus.COMPLETED
    assert lifecycle["inngest/function.cancelled"] == 1


# cancel_on
def cancellable(client: stepline.Stepline, log: list[str], timeout: timedelta | None = None) -> stepline.Function:
    @client.function(
        id="job",
        trigger=stepline.on_event("ai/job.started"),
        cancel_on=[
            stepline.CancelOn(event="ai/job.deleted", if_exp="async.data.job_id == event.data.job_id", timeout=timeout)
        ],
    )
    async def job(ctx: stepline.Context) -> None:
        await ctx.step.run("first", lambda: log.append(f"first {ctx.event.data['job_id']}"))
        await ctx.step.sleep("wait", timedelta(hours=1))
        await ctx.step.run("second", lambda: log.append(f"second {ctx.event.data['job_id']}"))

    return job


async def test_cancel_on_a_matching_event_stops_the_run_before_its_next_step(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel-on")
    log: list[str] = []
    job = cancellable(client, log)

    async with TestEngine(client, [job], database_url=database_url) as engine:
        doomed = await start(engine, "ai/job.started", {"job_id": "j1"})
        kept = await start(engine, "ai/job.started", {"job_id": "j2"})
        await engine.run_until_idle()
        await engine.send(stepline.Event("ai/job.deleted", {"job_id": "j1"}))
        await engine.advance(timedelta(hours=2))
        doomed_run, kept_run = await get_run(engine, doomed), await get_run(engine, kept)
        async with engine.store.transaction() as tx:
            listeners = await tx.pauses_for_event("ai/job.deleted")
        lifecycle = await lifecycle_events(engine)

    assert sorted(log) == ["first j1", "first j2", "second j2"]
    assert doomed_run.status is RunStatus.CANCELLED
    assert doomed_run.error is not None
    assert doomed_run.error["message"].startswith("cancel_on: event 'ai/job.deleted'")
    assert kept_run.status is RunStatus.COMPLETED
    assert listeners == []  # the cancelled run's listener went with it, the finished run's too
    assert lifecycle["inngest/function.cancelled"] == 1


async def test_cancel_on_stops_listening_after_its_timeout(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel-on-timeout")
    log: list[str] = []
    job = cancellable(client, log, timeout=timedelta(minutes=30))

    async with TestEngine(client, [job], database_url=database_url) as engine:
        run_id = await start(engine, "ai/job.started", {"job_id": "j1"})
        await engine.advance(timedelta(minutes=31))
        await engine.send(stepline.Event("ai/job.deleted", {"job_id": "j1"}))
        await engine.advance(timedelta(hours=1))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert log == ["first j1", "second j1"]


async def test_the_triggering_event_does_not_cancel_its_own_run(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-cancel-self")
    runs: list[int] = []

    @client.function(
        id="latest",
        trigger=stepline.on_event("test/edit"),
        cancel_on=[stepline.CancelOn(event="test/edit", if_exp="async.data.doc == event.data.doc")],
    )
    async def latest(ctx: stepline.Context) -> None:
        await ctx.step.sleep("settle", timedelta(minutes=5))
        runs.append(ctx.event.data["v"])

    async with TestEngine(client, [latest], database_url=database_url) as engine:
        first = await start(engine, "test/edit", {"doc": "d", "v": 1})
        await engine.run_until_idle()
        second = await start(engine, "test/edit", {"doc": "d", "v": 2})
        await engine.advance(timedelta(minutes=10))
        statuses = [(await get_run(engine, run_id)).status for run_id in (first, second)]

    assert statuses == [RunStatus.CANCELLED, RunStatus.COMPLETED]
    assert runs == [2]


# timeouts
async def test_timeouts_finish_cancels_a_run_that_runs_too_long(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-finish")
    log: list[str] = []

    @client.function(
        id="slow",
        trigger=stepline.on_event("test/slow"),
        timeouts=stepline.Timeouts(finish=timedelta(minutes=30)),
    )
    async def slow(ctx: stepline.Context) -> None:
        await ctx.step.sleep("nap", ctx.event.data["nap"])
        await ctx.step.run("after", lambda: log.append(ctx.event.data["name"]))

    async with TestEngine(client, [slow], database_url=database_url) as engine:
        too_long = await start(engine, "test/slow", {"nap": 3600, "name": "too long"})
        in_time = await start(engine, "test/slow", {"nap": 600, "name": "in time"})
        await engine.advance(timedelta(hours=2))
        late, quick = await get_run(engine, too_long), await get_run(engine, in_time)
        left = await engine.store.count_queue()

    assert log == ["in time"]
    assert late.status is RunStatus.CANCELLED
    assert late.error == {"name": "Cancelled", "message": "timeouts.finish: the run did not finish within 30m"}
    assert quick.status is RunStatus.COMPLETED
    assert left == 0  # the finished run's timers went with it


async def test_timeouts_finish_counts_from_the_start_not_from_the_event(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-finish-late-start")

    @client.function(
        id="later",
        trigger=stepline.on_event("test/later"),
        debounce=stepline.Debounce(period=timedelta(minutes=20)),
        timeouts=stepline.Timeouts(finish=timedelta(minutes=30)),
    )
    async def later(ctx: stepline.Context) -> str:
        await ctx.step.sleep("nap", timedelta(minutes=25))
        return "done"

    async with TestEngine(client, [later], database_url=database_url) as engine:
        run_id = await start(engine, "test/later")
        await engine.advance(timedelta(minutes=50))  # started at 20, finished at 45: 25 minutes
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "done"


async def test_timeouts_finish_waits_for_a_run_that_started_late(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-finish-held")

    @client.function(
        id="held",
        trigger=stepline.on_event("test/held"),
        timeouts=stepline.Timeouts(finish=timedelta(minutes=1)),
    )
    async def held(ctx: stepline.Context) -> str:
        await ctx.step.sleep("nap", ctx.event.data["nap"])
        return "done"

    async with TestEngine(client, [held], database_url=database_url) as engine:
        in_time = await start(engine, "test/held", {"nap": 45})
        too_long = await start(engine, "test/held", {"nap": 70})
        # A worker claims both starts and dies: the runs start 30 s late, when the lease expires.
        now = engine.fake_clock.now_ms()
        assert len(await engine.store.claim(now, 2, now + 30_000)) == 2
        await engine.advance(timedelta(minutes=3))  # the timers first fire at 60 s, before the deadlines
        quick, slow = await get_run(engine, in_time), await get_run(engine, too_long)

    assert quick.started_at is not None
    assert quick.started_at - quick.created_at == 30_000
    assert quick.status is RunStatus.COMPLETED  # started at 30 s, finished at 75 s: within the minute
    assert quick.output == "done"
    assert slow.status is RunStatus.CANCELLED
    assert slow.ended_at is not None
    assert slow.ended_at - slow.created_at == 90_000  # a minute after it started, not after it was sent


async def test_timeouts_start_cancels_a_run_not_started_in_time(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-start")
    calls: Counter[str] = Counter()

    @client.function(
        id="prompt",
        trigger=stepline.on_event("test/prompt"),
        timeouts=stepline.Timeouts(start=timedelta(seconds=5)),
    )
    async def prompt(ctx: stepline.Context) -> None:
        calls["prompt"] += 1

    async with TestEngine(client, [prompt], database_url=database_url) as engine:
        run_id = await start(engine, "test/prompt")
        # A worker claims the run's start and dies before calling it: its 30 s lease keeps
        # the run from starting, and the start timeout comes first.
        now = engine.fake_clock.now_ms()
        [held] = await engine.store.claim(now, 1, now + 30_000)
        await engine.advance(timedelta(minutes=1))
        run = await get_run(engine, run_id)
        prompt_run = await start(engine, "test/prompt")
        await engine.run_until_idle()
        await engine.advance(timedelta(minutes=1))
        prompt_view = await get_run(engine, prompt_run)

    assert held.kind is records.ItemKind.DISCOVER
    assert run.status is RunStatus.CANCELLED
    assert run.error == {"name": "Cancelled", "message": "timeouts.start: the run did not start within 5s"}
    assert calls == {"prompt": 1}  # only the second run, which started at once
    assert prompt_view.status is RunStatus.COMPLETED


# debounce
async def test_debounce_runs_once_with_the_last_event_after_the_quiet_period(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-debounce")
    seen: list[Any] = []

    @client.function(
        id="reindex",
        trigger=stepline.on_event("test/edit"),
        debounce=stepline.Debounce(period=timedelta(seconds=10), key="event.data.doc"),
    )
    async def reindex(ctx: stepline.Context) -> None:
        seen.append((ctx.event.data["doc"], ctx.event.data["v"]))

    async with TestEngine(client, [reindex], database_url=database_url) as engine:
        for version in (1, 2, 3):
            await engine.send(stepline.Event("test/edit", {"doc": "a", "v": version}))
            await engine.advance(timedelta(seconds=5))
        await engine.send(stepline.Event("test/edit", {"doc": "b", "v": 1}))
        assert seen == []  # still quiet-period waiting
        await engine.advance(timedelta(seconds=11))
        skipped = await runs_in(engine, RunStatus.SKIPPED)
        completed = await runs_in(engine, RunStatus.COMPLETED)

    assert sorted(seen) == [("a", 3), ("b", 1)]
    assert [run.events[0]["data"]["v"] for run in skipped] == [1, 2]
    assert {run.error["message"] for run in skipped if run.error} == {"debounced: a later event replaced it"}
    assert len(completed) == 2


async def test_debounce_timeout_runs_despite_a_steady_stream_of_events(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-debounce-timeout")
    seen: list[tuple[int, int]] = []

    @client.function(
        id="flush",
        trigger=stepline.on_event("test/tick"),
        debounce=stepline.Debounce(period=timedelta(seconds=10), timeout=timedelta(seconds=30)),
    )
    async def flush(ctx: stepline.Context) -> None:
        seen.append((ctx.event.data["n"], engine.fake_clock.now_ms() - begin))

    async with TestEngine(client, [flush], database_url=database_url) as engine:
        begin = engine.fake_clock.now_ms()
        for n in range(8):  # one event every 5 s: never 10 s of quiet
            await engine.send(stepline.Event("test/tick", {"n": n}))
            await engine.advance(timedelta(seconds=5))
        await engine.advance(timedelta(seconds=30))

    # The first window opened at 0 and ran at its 30 s timeout with the last event sent by
    # then (events 0-4 were replaced); events 6 and 7 opened a new window, quiet after 35 s.
    assert seen == [(5, 30_000), (7, 45_000)]


# batches
async def test_batch_runs_once_for_a_full_batch_and_once_at_the_timeout(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-batch")
    batches: list[list[int]] = []

    @client.function(
        id="bulk",
        trigger=stepline.on_event("test/row"),
        batch_events=stepline.Batch(max_size=3, timeout=timedelta(seconds=5)),
    )
    async def bulk(ctx: stepline.Context) -> int:
        batches.append([event.data["n"] for event in ctx.events])
        return len(ctx.events)

    async with TestEngine(client, [bulk], database_url=database_url) as engine:
        sent = [await engine.send(stepline.Event("test/row", {"n": n})) for n in range(5)]
        await engine.run_until_idle()
        assert batches == [[0, 1, 2]]  # full: started at once
        await engine.advance(timedelta(seconds=6))
        runs = await runs_in(engine, RunStatus.COMPLETED)
        first = await get_run(engine, runs[0].id)

    assert batches == [[0, 1, 2], [3, 4]]
    assert [event["data"]["n"] for event in first.events] == [0, 1, 2]
    assert first.event == first.events[0]
    assert [run.output for run in runs] == [3, 2]
    assert [result.run_ids[0] for result in sent] == [runs[0].id] * 3 + [runs[1].id] * 2


async def test_batch_keys_and_condition(database_url: str) -> None:
    client = stepline.Stepline(app_id="flow-batch-key")
    batches: list[list[str]] = []

    @client.function(
        id="bulk",
        trigger=stepline.on_event("test/row"),
        batch_events=stepline.Batch(
            max_size=10, timeout=timedelta(seconds=5), key="event.data.tenant", if_exp="event.data.bulk == true"
        ),
    )
    async def bulk(ctx: stepline.Context) -> None:
        batches.append([f"{event.data['tenant']}{event.data['n']}" for event in ctx.events])

    async with TestEngine(client, [bulk], database_url=database_url) as engine:
        rows = [("a", 1, True), ("b", 1, True), ("a", 2, True), ("a", 3, False), ("b", 2, True)]
        for tenant, n, is_bulk in rows:
            await engine.send(stepline.Event("test/row", {"tenant": tenant, "n": n, "bulk": is_bulk}))
        await engine.run_until_idle()
        assert batches == [["a3"]]  # not batched: ran alone at once
        await engine.advance(timedelta(seconds=6))

    assert sorted(batches) == [["a1", "a2"], ["a3"], ["b1", "b2"]]
