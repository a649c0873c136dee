"""Tracked tasks through the embedded engine, as a user sees them via ``client.tasks``.

Every test runs on SQLite and PostgreSQL (the ``database_url`` fixture) unless it exercises a
PostgreSQL-only feature (several sweepers on one database, ``stepline.tasks.enqueue_in``).
Checked: the task follows its run (pending, running, complete, failed after on_failure,
cancelled, reopened by a rerun), progress only moves forward, quota is enforced in the enqueue's
own transaction (nothing written when refused, exact under concurrency), bad input is refused
at call time, the sweeper fails tasks nobody serves, a retried enqueue is idempotent, and the
transactional ``enqueue_in`` commits and rolls back with the application's transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import ulid

import stepline
from stepline.engine import ingest, registry, sweeper, task_stream
from stepline.storage import open_store, records
from stepline.testing import FakeClock, TestEngine
from tests.conftest import POSTGRES_ADMIN_URL, _with_database, drop_postgres_database
from tests.engine.task_support import quota_lock_held, quota_uses, wait_for_lock_waiters, written

BACKOFF = timedelta(minutes=10)
"""Comfortably past every retry backoff of the first attempts."""
HOUR = timedelta(hours=1)


def event(name: str = "test/work", **data: Any) -> stepline.Event:
    return stepline.Event(name, data)


async def require(client: stepline.Stepline, task_id: str) -> stepline.Task:
    task = await client.tasks.get(task_id)
    assert task is not None, f"task {task_id} not found"
    return task


# transitions


async def test_task_is_pending_at_once_running_during_its_run_and_complete_with_the_result(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-flow")
    seen: list[str] = []

    @client.function(id="answer", trigger=stepline.on_event("test/work"))
    async def answer(ctx: stepline.Context) -> dict[str, Any]:
        async def look() -> str:
            assert ctx.task.id is not None
            return (await require(client, ctx.task.id)).status

        seen.append(await ctx.step.run("look", look))
        return {"answer": 42, "asked": ctx.event.data["q"]}

    async with TestEngine(client, [answer], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="answer", owner="user-1", event=event(q="life"))
        polled = await require(client, task.id)
        await engine.run_until_idle()
        done = await require(client, task.id)

    assert task.status == "pending"
    assert polled.status == "pending"
    assert polled.run_id is not None
    assert polled.started_at is None
    assert seen == ["running"]
    assert done.status == "complete"
    assert done.result == {"answer": 42, "asked": "life"}
    assert done.progress == 1.0
    assert done.error is None
    assert done.started_at is not None
    assert done.ended_at is not None
    assert done.is_terminal


async def test_task_fails_only_after_on_failure_ended_and_takes_the_handlers_reason(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-handled")
    ids: dict[str, str] = {}
    seen_by_handler: list[tuple[str, str | None]] = []

    async def explain(ctx: stepline.Context) -> str:
        current = await require(client, ids["task"])
        seen_by_handler.append((current.status, current.reason))
        return "  We could not tailor your resume; please try again.  "

    @client.function(id="doomed", trigger=stepline.on_event("test/work"), retries=0, on_failure=explain)
    async def doomed(ctx: stepline.Context) -> None:
        raise RuntimeError("model exploded")

    async with TestEngine(client, [doomed], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="tailor", owner="user-1", event=event())
        ids["task"] = task.id
        await engine.run_until_idle()
        done = await require(client, task.id)
        runs = await engine.store.list_runs(limit=10)

    # While the handler ran, the run had failed for good but the task had not ended.
    assert [status for status, _ in seen_by_handler] == ["running"]
    assert done.status == "failed"
    assert done.reason == "We could not tailor your resume; please try again."
    assert done.error is not None
    assert done.error["name"] == "RuntimeError"
    assert done.ended_at is not None
    assert sorted(run.status.value for run in runs) == ["completed", "failed"]


async def test_task_fails_at_once_with_the_runs_error_when_the_function_has_no_handler(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-unhandled")

    @client.function(id="doomed", trigger=stepline.on_event("test/work"), retries=0)
    async def doomed(ctx: stepline.Context) -> None:
        raise ValueError("the job description is empty")

    async with TestEngine(client, [doomed], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="tailor", owner="user-1", event=event())
        failed = await engine.wait_for_task(task.id)

    assert failed.status is records.TaskStatus.FAILED
    assert failed.error is not None
    assert failed.error["name"] == "ValueError"
    assert "the job description is empty" in failed.error["message"]


async def test_task_with_a_handler_is_not_failed_while_the_handler_is_still_queued(database_url: str) -> None:
    """The handler is held back by a step of its own that fails once: between its attempts the
    task must still not be failed."""
    client = stepline.Stepline(app_id="tasks-slow-handler")
    attempts: list[int] = []

    async def explain(ctx: stepline.Context) -> str:
        def flaky() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("handler hiccup")
            return "explained"

        return await ctx.step.run("explain", flaky)

    @client.function(id="doomed", trigger=stepline.on_event("test/work"), retries=0, on_failure=explain)
    async def doomed(ctx: stepline.Context) -> None:
        raise RuntimeError("boom")

    async with TestEngine(client, [doomed], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="tailor", owner="user-1", event=event())
        await engine.run_until_idle()
        between = await require(client, task.id)
        await engine.advance(BACKOFF)
        done = await require(client, task.id)

    assert len(attempts) == 2
    assert between.status == "running"
    assert done.status == "failed"
    assert done.reason == "explained"


@pytest.mark.parametrize("how", ["client.tasks.cancel", "engine.cancel_run", "engine.cancel_task"])
async def test_cancelling_a_task_or_its_run_cancels_the_task_and_stops_before_the_next_step(
    database_url: str, how: str
) -> None:
    client = stepline.Stepline(app_id="tasks-cancel")
    done_steps: list[str] = []

    @client.function(id="slow", trigger=stepline.on_event("test/work"))
    async def slow(ctx: stepline.Context) -> str:
        await ctx.step.run("first", lambda: done_steps.append("first"))
        await ctx.step.sleep("pause", HOUR)
        await ctx.step.run("second", lambda: done_steps.append("second"))
        return "finished"

    async with TestEngine(client, [slow], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="slow", owner="user-1", event=event())
        await engine.run_until_idle()
        assert (await require(client, task.id)).status == "running"
        if how == "client.tasks.cancel":
            answered = await client.tasks.cancel(task.id)
            assert answered.status == "cancelled"
        elif how == "engine.cancel_run":
            assert task.run_id is not None
            assert await engine.cancel_run(task.run_id)
        else:
            assert (await engine.cancel_task(task.id)).status is records.TaskStatus.CANCELLED
        await engine.advance(2 * HOUR)
        cancelled = await require(client, task.id)
        again = await client.tasks.cancel(task.id)

    assert done_steps == ["first"]
    assert cancelled.status == "cancelled"
    assert cancelled.reason
    assert cancelled.result is None
    assert again == cancelled  # cancelling an ended task changes nothing


async def test_cancelling_a_task_before_its_run_started_means_the_function_never_runs(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-cancel-early")
    calls: list[str] = []

    @client.function(id="never", trigger=stepline.on_event("test/work"))
    async def never(ctx: stepline.Context) -> None:
        calls.append("called")

    async with TestEngine(client, [never], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="never", owner="user-1", event=event())
        cancelled = await client.tasks.cancel(task.id)
        await engine.run_until_idle()
        after = await require(client, task.id)

    assert cancelled.status == "cancelled"
    assert after.status == "cancelled"
    assert calls == []


async def test_rerunning_a_failed_tasks_run_reopens_the_task_and_completes_it(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-rerun")
    calls: list[int] = []

    @client.function(id="flaky", trigger=stepline.on_event("test/work"), retries=0)
    async def flaky(ctx: stepline.Context) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time unlucky")
        return "second time lucky"

    async with TestEngine(client, [flaky], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="flaky", owner="user-1", event=event())
        failed = await engine.wait_for_task(task.id)
        assert failed.run_id is not None
        new_run = await engine.rerun(failed.run_id)
        reopened = await require(client, task.id)
        done = await engine.wait_for_task(task.id)

    assert failed.status is records.TaskStatus.FAILED
    assert reopened.status == "pending"
    assert reopened.error is None
    assert reopened.ended_at is None
    assert reopened.run_id == new_run
    assert done.status is records.TaskStatus.COMPLETE
    assert done.result == "second time lucky"
    assert done.error is None
    assert done.run_id == new_run


# progress


async def test_progress_is_stored_and_visible_to_pollers_while_the_task_runs(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-progress")
    seen: list[tuple[float | None, str | None]] = []

    @client.function(id="embed", trigger=stepline.on_event("test/work"))
    async def embed(ctx: stepline.Context) -> str:
        await ctx.task.progress(0.6, "embedding chunks")

        async def look() -> None:
            assert ctx.task.id is not None
            now = await require(client, ctx.task.id)
            seen.append((now.progress, now.message))

        await ctx.step.run("look", look)
        return "done"

    async with TestEngine(client, [embed], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="embed", owner="user-1", event=event())
        await engine.run_until_idle()
        done = await require(client, task.id)

    assert seen == [(0.6, "embedding chunks")]
    assert done.status == "complete"
    assert done.progress == 1.0


async def test_progress_never_moves_backwards_and_a_replayed_repeat_does_not_bump_the_version(
    database_url: str,
) -> None:
    """A step that fails once makes the function replay from the top: its progress calls are
    made again; the repeat of the last report changes nothing, a smaller value is ignored."""
    client = stepline.Stepline(app_id="tasks-progress-replay")
    snapshots: list[tuple[float | None, str | None, int]] = []

    @client.function(id="replayed", trigger=stepline.on_event("test/work"), retries=2)
    async def replayed(ctx: stepline.Context) -> str:
        await ctx.step.run("prepare", lambda: "ready")
        await ctx.task.progress(0.5, "half way")
        await ctx.task.progress(0.2, "going back")

        async def look_then_fail_once() -> str:
            assert ctx.task.id is not None
            now = await require(client, ctx.task.id)
            snapshots.append((now.progress, now.message, now.version))
            if len(snapshots) == 1:
                raise RuntimeError("transient")
            return "ok"

        return await ctx.step.run("look", look_then_fail_once)

    async with TestEngine(client, [replayed], database_url=database_url, checkpointing=False) as engine:
        task = await client.tasks.enqueue(kind="replayed", owner="user-1", event=event())
        await engine.run_until_idle()
        await engine.advance(BACKOFF)
        done = await require(client, task.id)
        assert done.status == "complete"
        ended = await engine.report_task_progress(task.id, 0.9, "too late")

    assert len(snapshots) == 2
    assert snapshots[0][:2] == (0.5, "half way")
    assert snapshots[1] == snapshots[0]  # same value, same message, same version
    assert ended is False


async def test_report_task_progress_says_whether_it_was_recorded(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-progress-direct")

    @client.function(id="idle", trigger=stepline.on_event("test/work"))
    async def idle(ctx: stepline.Context) -> None:
        return None

    async with TestEngine(client, [idle], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="idle", owner="user-1", event=event())
        version0 = (await require(client, task.id)).version
        assert await engine.report_task_progress(task.id, 0.4, "a")
        assert not await engine.report_task_progress(task.id, 0.3, "b")
        assert not await engine.report_task_progress(task.id, 0.4, "a")
        assert await engine.report_task_progress(task.id, 0.4, "new message")
        now = await require(client, task.id)
        with pytest.raises(stepline.TaskNotFoundError):
            await engine.report_task_progress(str(ulid.ULID()), 0.5)
        with pytest.raises(stepline.ConfigurationError):
            await engine.report_task_progress(task.id, 1.5)

    assert (now.progress, now.message) == (0.4, "new message")
    assert now.version == version0 + 2


async def test_sync_functions_report_progress_with_a_plain_call(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-sync")
    seen: list[tuple[float | None, str | None]] = []

    @client.function(id="plain", trigger=stepline.on_event("test/work"))
    def plain(ctx: stepline.ContextSync) -> str:
        ctx.task.progress(0.3, "reading")

        def look() -> str:
            assert ctx.task.id is not None
            now = client.tasks.get_sync(ctx.task.id)
            assert now is not None
            seen.append((now.progress, now.message))
            return now.status

        return ctx.step.run("look", look)

    async with TestEngine(client, [plain], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="plain", owner="user-1", event=event())
        done = await engine.wait_for_task(task.id)

    assert seen == [(0.3, "reading")]
    assert done.status is records.TaskStatus.COMPLETE
    assert done.result == "running"


async def test_a_run_without_a_task_has_no_task_id_and_progress_is_a_no_op(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-none")
    ids: list[str | None] = []

    @client.function(id="plain-run", trigger=stepline.on_event("test/work"))
    async def plain_run(ctx: stepline.Context) -> str:
        ids.append(ctx.task.id)
        await ctx.task.progress(0.5, "nobody listens")
        return "fine"

    async with TestEngine(client, [plain_run], database_url=database_url) as engine:
        sent = await engine.send(event())
        run = await engine.wait_for_run(sent.run_ids[0])
        counted = await written(engine.store)

    assert ids == [None]
    assert run.status is records.RunStatus.COMPLETED
    assert run.output == "fine"
    assert counted[0] == 0


# quota


def tailor_quota(limit: int = 2, *, refund: bool = False, feature: str = "tailor") -> stepline.Quota:
    return stepline.Quota(feature=feature, limit=limit, window=HOUR, refund_on_failure=refund)


async def test_over_quota_raises_with_retry_after_and_writes_nothing(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-quota")

    @client.function(id="tailor", trigger=stepline.on_event("test/work"))
    async def tailor(ctx: stepline.Context) -> str:
        return "ok"

    async with TestEngine(client, [tailor], database_url=database_url) as engine:
        for _ in range(2):
            await client.tasks.enqueue(kind="tailor", owner="user-1", event=event(), quota=tailor_quota())
        before = await written(engine.store)
        with pytest.raises(stepline.QuotaExceeded) as refused:
            await client.tasks.enqueue(kind="tailor", owner="user-1", event=event(), quota=tailor_quota())
        after = await written(engine.store)
        engine.fake_clock.advance(timedelta(minutes=20))
        with pytest.raises(stepline.QuotaExceeded) as later:
            await client.tasks.enqueue(kind="tailor", owner="user-1", event=event(), quota=tailor_quota())

    assert before == (2, 2, 2)
    assert after == before
    assert quota_uses(database_url) == 2
    assert refused.value.retry_after == 3600
    assert refused.value.feature == "tailor"
    assert refused.value.limit == 2
    assert later.value.retry_after == 2400


async def test_quota_uses_free_up_after_the_window(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-quota-window")

    async with TestEngine(client, [], database_url=database_url) as engine:
        first = await client.tasks.enqueue(kind="t", owner="u", event=event("test/nobody"), quota=tailor_quota(1))
        engine.fake_clock.advance(HOUR - timedelta(seconds=1))
        with pytest.raises(stepline.QuotaExceeded) as refused:
            await client.tasks.enqueue(kind="t", owner="u", event=event("test/nobody"), quota=tailor_quota(1))
        engine.fake_clock.advance(timedelta(seconds=1))
        second = await client.tasks.enqueue(kind="t", owner="u", event=event("test/nobody"), quota=tailor_quota(1))

    assert refused.value.retry_after == 1
    assert second.id != first.id
    assert second.status == "pending"


async def test_quota_is_counted_per_owner_and_per_feature(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-quota-scope")

    async def enqueue(owner: str, feature: str) -> stepline.Task:
        quota = tailor_quota(1, feature=feature)
        return await client.tasks.enqueue(kind=feature, owner=owner, event=event("test/nobody"), quota=quota)

    async with TestEngine(client, [], database_url=database_url):
        await enqueue("alice", "tailor")
        with pytest.raises(stepline.QuotaExceeded):
            await enqueue("alice", "tailor")
        await enqueue("bob", "tailor")
        await enqueue("alice", "cover_letter")
        with pytest.raises(stepline.QuotaExceeded):
            await enqueue("bob", "tailor")
        with pytest.raises(stepline.QuotaExceeded):
            await enqueue("alice", "cover_letter")

    assert quota_uses(database_url) == 3


async def test_refund_on_failure_gives_the_use_back_when_the_task_fails_not_when_it_completes(
    database_url: str,
) -> None:
    client = stepline.Stepline(app_id="tasks-refund")

    @client.function(id="fails", trigger=stepline.on_event("test/fails"), retries=0)
    async def fails(ctx: stepline.Context) -> None:
        raise RuntimeError("no luck")

    @client.function(id="works", trigger=stepline.on_event("test/works"))
    async def works(ctx: stepline.Context) -> str:
        return "ok"

    async def enqueue(name: str, feature: str) -> stepline.Task:
        quota = tailor_quota(1, refund=True, feature=feature)
        return await client.tasks.enqueue(kind=feature, owner="user-1", event=event(name), quota=quota)

    async with TestEngine(client, [fails, works], database_url=database_url) as engine:
        failing = await enqueue("test/fails", "a")
        assert (await engine.wait_for_task(failing.id)).status is records.TaskStatus.FAILED
        refunded = quota_uses(database_url, failing.id)
        retried = await enqueue("test/fails", "a")  # the use came back

        working = await enqueue("test/works", "b")
        assert (await engine.wait_for_task(working.id)).status is records.TaskStatus.COMPLETE
        with pytest.raises(stepline.QuotaExceeded):
            await enqueue("test/works", "b")

    assert refunded == 0
    assert retried.status == "pending"
    assert quota_uses(database_url, working.id) == 1


async def test_fifty_concurrent_enqueues_against_a_limit_of_twenty_make_exactly_twenty_tasks(
    database_url: str,
) -> None:
    """A real engine (system clock, several pooled connections): the enqueues truly overlap on
    PostgreSQL; on SQLite they serialise on the single writer. Either way the limit holds."""
    client = stepline.Stepline(app_id="tasks-quota-race")

    @client.function(id="tailor", trigger=stepline.on_event("test/work"))
    async def tailor(ctx: stepline.Context) -> None:
        return None

    quota = stepline.Quota(feature="tailor", limit=20, window=timedelta(days=1))
    engine = stepline.Engine(client, [tailor], database_url, background=False, pool_size=8)
    async with engine:

        async def one(index: int) -> stepline.Task | stepline.QuotaExceeded:
            try:
                return await client.tasks.enqueue(kind="tailor", owner="racer", event=event(n=index), quota=quota)
            except stepline.QuotaExceeded as refused:
                return refused

        outcomes = await asyncio.gather(*(one(index) for index in range(50)))
        stored = await engine.store.list_tasks(owner="racer", status=None, cursor=None, limit=100)
        counted = await written(engine.store)

    made = [outcome for outcome in outcomes if isinstance(outcome, stepline.Task)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, stepline.QuotaExceeded)]
    assert len(made) == 20
    assert len(refused) == 30
    assert {task.id for task in stored} == {task.id for task in made}
    assert counted == (20, 20, 20)
    assert quota_uses(database_url) == 20


# bad input


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0, "window": HOUR},
        {"limit": -3, "window": HOUR},
        {"limit": True, "window": HOUR},
        {"limit": 5, "window": timedelta(milliseconds=500)},
        {"limit": 5, "window": 0.5},
        {"limit": 5, "window": "soon"},
        {"limit": 5, "window": ""},
        {"limit": 5, "window": timedelta(days=400)},
    ],
    ids=[
        "limit-0",
        "limit-negative",
        "limit-bool",
        "window-500ms",
        "window-half-second",
        "window-soon",
        "window-empty",
        "window-400-days",
    ],
)
def test_a_quota_that_cannot_work_is_refused_at_definition(kwargs: dict[str, Any]) -> None:
    with pytest.raises(stepline.ConfigurationError):
        stepline.Quota(feature="tailor", **kwargs)


def test_a_quota_window_given_as_a_string_or_seconds_is_understood() -> None:
    # The annotation says timedelta though strings and seconds are documented and accepted.
    assert stepline.Quota(feature="f", limit=1, window="1d").window == timedelta(days=1)
    assert stepline.Quota(feature="f", limit=1, window=90).window == timedelta(seconds=90)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "", "owner": "u", "event": stepline.Event("test/work")},
        {"kind": "   ", "owner": "u", "event": stepline.Event("test/work")},
        {"kind": "k", "owner": "", "event": stepline.Event("test/work")},
        {"kind": "k", "owner": " \t", "event": stepline.Event("test/work")},
        {"kind": "k", "owner": "u", "event": {"name": "test/work"}},
        {"kind": "k", "owner": "u", "event": stepline.Event("inngest/function.failed")},
        {"kind": "k", "owner": "u", "event": stepline.Event("test/work"), "quota": {"limit": 1}},
        {"kind": "k", "owner": "u", "event": stepline.Event("test/work"), "id": "not-a-ulid"},
        {"kind": "k", "owner": "u", "event": stepline.Event("test/work"), "pending_timeout": 0.1},
    ],
    ids=[
        "empty-kind",
        "blank-kind",
        "empty-owner",
        "blank-owner",
        "dict-event",
        "reserved-event",
        "dict-quota",
        "bad-id",
        "short-pending-timeout",
    ],
)
async def test_bad_enqueue_arguments_raise_configuration_error_and_write_nothing(
    database_url: str, kwargs: dict[str, Any]
) -> None:
    client = stepline.Stepline(app_id="tasks-bad")
    async with TestEngine(client, [], database_url=database_url) as engine:
        with pytest.raises(stepline.ConfigurationError):
            await client.tasks.enqueue(**kwargs)
        counted = await written(engine.store)
    assert counted == (0, 0, 0)


async def test_an_unknown_task_id_reads_as_none_and_cannot_be_cancelled(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-unknown")
    async with TestEngine(client, [], database_url=database_url) as engine:
        unknown = str(ulid.ULID())
        assert await client.tasks.get(unknown) is None
        assert await client.tasks.get("no such thing") is None
        with pytest.raises(stepline.TaskNotFoundError):
            await client.tasks.cancel(unknown)
        with pytest.raises(stepline.TaskNotFoundError):
            await engine.wait_for_task(unknown)


async def test_list_pages_through_an_owners_tasks_newest_first_and_filters_by_status(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-list")
    async with TestEngine(client, [], database_url=database_url):
        mine = []
        for index in range(7):
            mine.append(await client.tasks.enqueue(kind="k", owner="alice", event=event("test/nobody", n=index)))
        await client.tasks.enqueue(kind="k", owner="bob", event=event("test/nobody"))
        await client.tasks.cancel(mine[0].id)
        pages: list[list[str]] = []
        cursor = None
        while True:
            page = await client.tasks.list(owner="alice", cursor=cursor, limit=3)
            pages.append([task.id for task in page.tasks])
            cursor = page.cursor
            if cursor is None:
                break
        cancelled = await client.tasks.list(owner="alice", status="cancelled")
        pending = await client.tasks.list(status="pending")

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [task_id for page in pages for task_id in page] == sorted((task.id for task in mine), reverse=True)
    assert [task.id for task in cancelled.tasks] == [mine[0].id]
    assert len(pending.tasks) == 7


async def test_list_filters_by_kind_alone_and_with_owner_and_status(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-kinds")
    async with TestEngine(client, [], database_url=database_url):
        made: dict[tuple[str, str], list[str]] = {}
        for index in range(12):
            kind, owner = ("tailor", "embed", "score")[index % 3], ("alice", "bob")[index % 2]
            task = await client.tasks.enqueue(kind=kind, owner=owner, event=event("test/nobody", n=index))
            made.setdefault((kind, owner), []).append(task.id)
        cancelled = made[("tailor", "alice")][0]
        await client.tasks.cancel(cancelled)
        tailored = [task.id for task in (await client.tasks.list(kind="tailor")).tasks]
        alices = [task.id for task in (await client.tasks.list(kind="tailor", owner="alice")).tasks]
        alices_cancelled = await client.tasks.list(kind="tailor", owner="alice", status="cancelled")
        pending_embeds = await client.tasks.list(kind="embed", status="pending")
        first = await client.tasks.list(kind="score", limit=1)
        second = await client.tasks.list(kind="score", limit=5, cursor=first.cursor)
        nothing = await client.tasks.list(kind="no-such-kind")
        with pytest.raises(stepline.ConfigurationError, match="kind"):
            await client.tasks.list(kind="")

    expected = sorted(made[("tailor", "alice")] + made[("tailor", "bob")], reverse=True)
    assert tailored == expected
    assert alices == sorted(made[("tailor", "alice")], reverse=True)
    assert [task.id for task in alices_cancelled.tasks] == [cancelled]
    assert {task.kind for task in pending_embeds.tasks} == {"embed"}
    assert len(pending_embeds.tasks) == 4
    scores = sorted(made[("score", "alice")] + made[("score", "bob")], reverse=True)
    assert [task.id for task in first.tasks + second.tasks] == scores
    assert second.cursor is None
    assert nothing.tasks == []


# sweeper


async def test_a_task_nobody_serves_fails_after_the_default_pending_timeout_naming_its_event(
    database_url: str,
) -> None:
    client = stepline.Stepline(app_id="tasks-sweep")
    async with TestEngine(client, [], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="orphan", owner="user-1", event=event("test/nobody-home"))
        assert task.run_id is None
        await engine.advance(timedelta(minutes=10) - timedelta(seconds=1))
        before = await require(client, task.id)
        await engine.advance(timedelta(seconds=1))
        after = await require(client, task.id)

    assert before.status == "pending"
    assert after.status == "failed"
    assert after.reason is not None
    assert "test/nobody-home" in after.reason
    assert after.error is not None
    assert after.error["name"] == "TaskPendingTimeout"


async def test_a_per_task_pending_timeout_overrides_the_default(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-sweep-custom")
    async with TestEngine(client, [], database_url=database_url) as engine:
        short = await client.tasks.enqueue(
            kind="orphan", owner="u", event=event("test/nobody"), pending_timeout=timedelta(seconds=30)
        )
        default = await client.tasks.enqueue(kind="orphan", owner="u", event=event("test/nobody"))
        await engine.advance(timedelta(seconds=29))
        assert (await require(client, short.id)).status == "pending"
        await engine.advance(timedelta(seconds=1))
        short_after = await require(client, short.id)
        default_after = await require(client, default.id)

    assert short_after.status == "failed"
    assert default_after.status == "pending"


async def test_a_queued_run_that_never_starts_is_cancelled_when_its_task_is_swept(database_url: str) -> None:
    """The run exists but nothing executes it (no run_until_idle): the sweeper fails the task and
    cancels the run so it cannot start later."""
    client = stepline.Stepline(app_id="tasks-sweep-run")
    calls: list[str] = []

    @client.function(id="late", trigger=stepline.on_event("test/work"))
    async def late(ctx: stepline.Context) -> None:
        calls.append("late")

    async with TestEngine(client, [late], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="late", owner="u", event=event(), pending_timeout="1m")
        assert task.run_id is not None
        engine.fake_clock.advance(timedelta(minutes=2))
        assert engine._sweeper is not None
        assert await engine._sweeper.sweep_due() == 1
        await engine.run_until_idle()
        swept = await require(client, task.id)
        run = await engine.get_run(task.run_id)

    assert swept.status == "failed"
    assert swept.reason is not None
    assert "did not start" in swept.reason
    assert run is not None
    assert run.status is records.RunStatus.CANCELLED
    assert calls == []


async def test_sweeping_refunds_the_quota_only_when_asked(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-sweep-refund")
    async with TestEngine(client, [], database_url=database_url) as engine:
        refunding = stepline.Quota(feature="a", limit=1, window=timedelta(days=1), refund_on_failure=True)
        keeping = stepline.Quota(feature="b", limit=1, window=timedelta(days=1))
        await client.tasks.enqueue(kind="a", owner="u", event=event("test/nobody"), quota=refunding)
        await client.tasks.enqueue(kind="b", owner="u", event=event("test/nobody"), quota=keeping)
        await engine.advance(timedelta(minutes=11))
        failed = await client.tasks.list(status="failed")
        again = await client.tasks.enqueue(kind="a", owner="u", event=event("test/nobody"), quota=refunding)
        with pytest.raises(stepline.QuotaExceeded):
            await client.tasks.enqueue(kind="b", owner="u", event=event("test/nobody"), quota=keeping)

    assert len(failed.tasks) == 2
    assert again.status == "pending"


async def test_two_sweepers_on_one_postgres_database_fail_each_due_task_exactly_once(postgres_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-sweepers")
    async with TestEngine(client, [], database_url=postgres_url) as engine:
        created = [
            (await client.tasks.enqueue(kind="orphan", owner="u", event=event("test/nobody", n=index))).id
            for index in range(260)
        ]
        later = FakeClock(engine.fake_clock.now_ms() + 11 * 60_000)
    swept: list[str] = []
    stores = [await open_store(postgres_url, pool_size=2) for _ in range(2)]
    try:
        ingestor = ingest.Ingestor(registry.Registry([]))
        sweepers = [
            sweeper.Sweeper(db, ingestor, later, on_swept=lambda task, _reason: swept.append(task.id)) for db in stores
        ]
        counts = await asyncio.gather(*(one.sweep_due() for one in sweepers))
        remaining = await stores[0].list_tasks(owner=None, status=records.TaskStatus.PENDING, cursor=None, limit=10)
        failed = await stores[0].list_tasks(owner=None, status=records.TaskStatus.FAILED, cursor=None, limit=500)
    finally:
        for db in stores:
            await db.close()

    assert sum(counts) == 260
    assert sorted(swept) == sorted(created)
    assert remaining == []
    assert len(failed) == 260
    assert all(task.version == 2 for task in failed)  # one change each: pending -> failed


# retried enqueue


async def test_enqueueing_twice_with_the_same_id_returns_the_same_task_and_writes_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-retry")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> str:
        return "ok"

    chosen = str(ulid.ULID())
    quota = tailor_quota(5)
    async with TestEngine(client, [work], database_url=database_url) as engine:
        first = await client.tasks.enqueue(kind="k", owner="alice", event=event(), quota=quota, id=chosen)
        second = await client.tasks.enqueue(kind="k", owner="alice", event=event(), quota=quota, id=chosen)
        counted = await written(engine.store)
        with pytest.raises(stepline.TaskConflictError):
            await client.tasks.enqueue(kind="k", owner="mallory", event=event(), id=chosen)
        after_conflict = await written(engine.store)
        done = await engine.wait_for_task(chosen)

    assert first.id == second.id == chosen
    assert second.run_id == first.run_id
    assert counted == (1, 1, 1)
    assert after_conflict == (1, 1, 1)
    assert quota_uses(database_url) == 1
    assert done.status is records.TaskStatus.COMPLETE


# transactional enqueue (PostgreSQL)


@pytest.fixture
async def app_conn(postgres_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The application's own connection, with its own table in the Stepline database."""
    conn = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE resumes (id TEXT PRIMARY KEY, owner TEXT NOT NULL)")
        await conn.commit()
        yield conn
    finally:
        await conn.close()


async def resume_ids(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    cursor = await conn.execute("SELECT id FROM resumes ORDER BY id")
    rows = await cursor.fetchall()
    await conn.commit()
    return [str(row[0]) for row in rows]


def real_now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_enqueue_in_commits_with_the_apps_own_write_and_the_engine_runs_the_task(
    postgres_url: str, app_conn: psycopg.AsyncConnection[Any]
) -> None:
    client = stepline.Stepline(app_id="tasks-in-tx")

    @client.function(id="tailor", trigger=stepline.on_event("test/work"))
    async def tailor(ctx: stepline.Context) -> str:
        return f"tailored {ctx.event.data['resume']}"

    async with TestEngine(client, [tailor], database_url=postgres_url) as engine:
        async with app_conn.transaction():
            await app_conn.execute("INSERT INTO resumes (id, owner) VALUES ('r1', 'alice')")
            task = await stepline.tasks.enqueue_in(
                app_conn, kind="tailor", owner="alice", event=event(resume="r1"), quota=tailor_quota(3)
            )
            invisible = await client.tasks.get(task.id)
        visible = await require(client, task.id)
        counted = await written(engine.store)
        engine.fake_clock.set_ms(real_now_ms() + 1_000)  # enqueue_in stamps real time
        done = await engine.wait_for_task(task.id)

    assert task.status == "pending"
    assert invisible is None
    assert visible.status == "pending"
    assert counted == (1, 1, 1)
    assert await resume_ids(app_conn) == ["r1"]
    assert done.status is records.TaskStatus.COMPLETE
    assert done.result == "tailored r1"
    assert quota_uses(postgres_url) == 1


async def test_enqueue_in_commit_wakes_a_running_engine_at_once(
    postgres_url: str, app_conn: psycopg.AsyncConnection[Any]
) -> None:
    """A background engine polling only every minute still runs the task within seconds: the
    commit of the app's transaction notifies it."""
    client = stepline.Stepline(app_id="tasks-in-tx-wake")

    @client.function(id="tailor", trigger=stepline.on_event("test/work"))
    async def tailor(ctx: stepline.Context) -> str:
        return "woken"

    engine = stepline.Engine(client, [tailor], postgres_url, poll_interval=timedelta(seconds=60))
    async with engine:
        async with app_conn.transaction():
            task = await stepline.tasks.enqueue_in(app_conn, kind="tailor", owner="alice", event=event())
        started = time.monotonic()
        done = await engine.wait_for_task(task.id, timeout=30)
        waited = time.monotonic() - started

    assert done.status is records.TaskStatus.COMPLETE
    assert done.result == "woken"
    assert waited < 20, f"the engine took {waited:.1f} s to notice the committed task"


async def test_enqueue_in_rolled_back_leaves_no_task_event_run_or_quota_use(
    postgres_url: str, app_conn: psycopg.AsyncConnection[Any]
) -> None:
    client = stepline.Stepline(app_id="tasks-in-tx-rollback")

    @client.function(id="tailor", trigger=stepline.on_event("test/work"))
    async def tailor(ctx: stepline.Context) -> None:
        return None

    class AppFailure(Exception):
        pass

    async with TestEngine(client, [tailor], database_url=postgres_url) as engine:
        created: list[str] = []

        async def tailor_then_fail() -> None:
            async with app_conn.transaction():
                await app_conn.execute("INSERT INTO resumes (id, owner) VALUES ('r1', 'alice')")
                task = await stepline.tasks.enqueue_in(
                    app_conn, kind="tailor", owner="alice", event=event(), quota=tailor_quota(3)
                )
                created.append(task.id)
                raise AppFailure("the app changed its mind")

        with pytest.raises(AppFailure):
            await tailor_then_fail()
        assert await client.tasks.get(created[0]) is None
        counted = await written(engine.store)
        engine.fake_clock.set_ms(real_now_ms() + 1_000)
        processed = await engine.run_until_idle()

    assert counted == (0, 0, 0)
    assert processed == 0
    assert quota_uses(postgres_url) == 0
    assert await resume_ids(app_conn) == []


async def test_quota_exceeded_inside_enqueue_in_leaves_the_apps_transaction_usable(
    postgres_url: str, app_conn: psycopg.AsyncConnection[Any]
) -> None:
    client = stepline.Stepline(app_id="tasks-in-tx-quota")

    @client.function(id="tailor", trigger=stepline.on_event("test/work"))
    async def tailor(ctx: stepline.Context) -> None:
        return None

    async with TestEngine(client, [tailor], database_url=postgres_url) as engine:
        async with app_conn.transaction():
            await app_conn.execute("INSERT INTO resumes (id, owner) VALUES ('r1', 'alice')")
            await stepline.tasks.enqueue_in(app_conn, kind="t", owner="alice", event=event(), quota=tailor_quota(1))
            with pytest.raises(stepline.QuotaExceeded) as refused:
                await stepline.tasks.enqueue_in(app_conn, kind="t", owner="alice", event=event(), quota=tailor_quota(1))
            await app_conn.execute("INSERT INTO resumes (id, owner) VALUES ('r2', 'alice')")
        counted = await written(engine.store)

    assert refused.value.retry_after > 0
    assert await resume_ids(app_conn) == ["r1", "r2"]
    assert counted == (1, 1, 1)
    assert quota_uses(postgres_url) == 1


async def test_enqueue_in_on_an_unmigrated_database_says_to_run_stepline_migrate(postgres_template: str) -> None:
    name = f"stepline_bare_{ulid.ULID().hex[-12:]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        async with await psycopg.AsyncConnection.connect(_with_database(POSTGRES_ADMIN_URL, name)) as conn:
            with pytest.raises(stepline.StorageError) as refused:
                async with conn.transaction():
                    await stepline.tasks.enqueue_in(conn, kind="t", owner="alice", event=event())
    finally:
        drop_postgres_database(name)

    assert "stepline migrate" in str(refused.value)


# found while writing these tests (bugs fixed since; see the report)


async def test_the_embedded_stream_yields_each_change_in_order_and_ends_at_the_terminal_state(
    database_url: str,
) -> None:
    client = stepline.Stepline(app_id="tasks-stream")

    @client.function(id="paced", trigger=stepline.on_event("test/work"))
    async def paced(ctx: stepline.Context) -> str:
        await ctx.step.run("read", lambda: "read")
        await ctx.task.progress(0.5, "half")
        await ctx.step.sleep("pause", HOUR)
        return "done"

    async def next_task(frames: AsyncIterator[stepline.Task]) -> stepline.Task:
        return await asyncio.wait_for(anext(frames), 10)

    async with TestEngine(client, [paced], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="paced", owner="u", event=event())
        frames = client.tasks.stream(task.id)
        seen = [await next_task(frames)]
        await engine.run_until_idle()
        seen.append(await next_task(frames))
        await engine.advance(2 * HOUR)
        while not seen[-1].is_terminal:
            seen.append(await next_task(frames))
        with pytest.raises(StopAsyncIteration):
            await next_task(frames)

    # Every change, even those closer together than the stream's reads: started, then progress.
    assert [(frame.status, frame.progress, frame.message) for frame in seen] == [
        ("pending", None, None),
        ("running", None, None),
        ("running", 0.5, "half"),
        ("complete", 1.0, "half"),  # completion fills the bar
    ]
    assert seen[-1].result == "done"
    assert [frame.version for frame in seen] == [1, 2, 3, 4]


async def test_cancelling_while_the_failure_handler_runs_ends_the_task_for_good(database_url: str) -> None:
    """The run failed and its handler is between attempts: a cancel ends the task now, and the
    handler ending later does not change it again."""
    client = stepline.Stepline(app_id="tasks-cancel-in-handler")
    attempts: list[int] = []

    async def explain(ctx: stepline.Context) -> str:
        def flaky() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("handler hiccup")
            return "handled"

        return await ctx.step.run("explain", flaky)

    @client.function(id="doomed", trigger=stepline.on_event("test/work"), retries=0, on_failure=explain)
    async def doomed(ctx: stepline.Context) -> None:
        raise RuntimeError("boom")

    async with TestEngine(client, [doomed], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="k", owner="u", event=event())
        await engine.run_until_idle()
        assert (await require(client, task.id)).status == "running"
        cancelled = await client.tasks.cancel(task.id)
        await engine.advance(BACKOFF)
        after = await require(client, task.id)

    assert len(attempts) == 2  # the handler still ran to its end
    assert cancelled.status == "cancelled"
    assert after == cancelled


async def test_listing_with_a_limit_of_zero_is_a_configuration_error(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-list-zero")
    async with TestEngine(client, [], database_url=database_url):
        await client.tasks.enqueue(kind="k", owner="u", event=event("test/nobody"))
        with pytest.raises(stepline.ConfigurationError):
            await client.tasks.list(limit=0)


async def test_a_task_whose_event_id_already_started_its_function_is_refused_and_writes_nothing(
    database_url: str,
) -> None:
    """The event's id is the idempotency key of the runs it starts: reused within the window it
    would start no run, and the task would wait for nothing. The enqueue is refused instead."""
    client = stepline.Stepline(app_id="tasks-event-id")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> str:
        return "ok"

    quota = tailor_quota(5)
    async with TestEngine(client, [work], database_url=database_url) as engine:
        first = await client.tasks.enqueue(
            kind="k", owner="u", event=stepline.Event("test/work", {}, id="job-1"), quota=quota
        )
        before = await written(engine.store)
        with pytest.raises(stepline.TaskConflictError) as refused:
            await client.tasks.enqueue(
                kind="k", owner="u", event=stepline.Event("test/work", {}, id="job-1"), quota=quota
            )
        after = await written(engine.store)
        done = await engine.wait_for_task(first.id)

    assert "job-1" in str(refused.value)
    assert after == before == (1, 1, 1)
    assert quota_uses(database_url) == 1
    assert done.status is records.TaskStatus.COMPLETE


async def test_concurrent_enqueues_with_the_same_id_all_return_the_one_task(database_url: str) -> None:
    """A client retrying while its first attempt is still in flight must get the task back.

    On PostgreSQL the enqueues are made to overlap for certain: the quota lock is held from
    another connection until all of them wait on it. SQLite serialises writers anyway."""
    postgres = database_url.startswith("postgres")
    client = stepline.Stepline(app_id="tasks-same-id-race")
    chosen = str(ulid.ULID())
    quota = tailor_quota(10, feature="race")
    async with TestEngine(client, [], database_url=database_url) as engine:
        enqueues = [
            client.tasks.enqueue(kind="k", owner="u", event=event("test/nobody"), quota=quota, id=chosen)
            for _ in range(4)
        ]
        if postgres:
            with quota_lock_held(database_url, "race", "u"):
                racing = asyncio.gather(*enqueues, return_exceptions=True)
                await wait_for_lock_waiters(database_url, 4)
            outcomes = await racing
        else:
            outcomes = await asyncio.gather(*enqueues, return_exceptions=True)
        counted = await written(engine.store)

    assert [type(outcome).__name__ for outcome in outcomes] == ["Task"] * 4
    assert counted == (1, 1, 0)
    assert quota_uses(database_url) == 1


async def test_a_task_always_follows_the_run_it_records_and_ends(database_url: str) -> None:
    client = stepline.Stepline(app_id="tasks-two-functions")

    @client.function(id="first", trigger=stepline.on_event("test/work"))
    async def first(ctx: stepline.Context) -> str:
        return "first"

    @client.function(id="second", trigger=stepline.on_event("test/work", if_exp="event.data.stage == 2"))
    async def second(ctx: stepline.Context) -> str:
        return "second"

    async with TestEngine(client, [first, second], database_url=database_url) as engine:
        # "first" already ran for event id job-1 (its idempotency key is taken); "second" did not match.
        await engine.send(stepline.Event("test/work", {"stage": 1}, id="job-1"))
        await engine.run_until_idle()
        task = await client.tasks.enqueue(
            kind="k", owner="u", event=stepline.Event("test/work", {"stage": 2}, id="job-1")
        )
        await engine.advance(timedelta(minutes=11))
        after = await require(client, task.id)

    assert task.run_id is not None
    assert after.is_terminal, f"the task is still {after.status}"
    assert after.status == "complete"
    assert after.result == "second"


# enqueue in one call (Transaction.create_task) and the general path it steps aside for


def waiter_and_worker(client: stepline.Stepline) -> list[Any]:
    """``waiter`` waits for a ``test/work`` event and returns its data; ``work``, which the same
    event triggers, returns ``"done"``."""

    @client.function(id="waiter", trigger=stepline.on_event("test/start-waiting"))
    async def waiter(ctx: stepline.Context) -> Any:
        seen = await ctx.step.wait_for_event("wait-work", event="test/work", timeout=HOUR)
        return None if seen is None else seen.data

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> str:
        return "done"

    return [waiter, work]


async def test_a_tasks_event_resumes_a_run_waiting_for_it_and_the_task_still_runs(database_url: str) -> None:
    """Wait pauses are matched by the engine's expressions, so an enqueue whose event someone
    waits for takes the general path: the waiting run resumes and the task follows its own run."""
    client = stepline.Stepline(app_id="tasks-waiters")

    async with TestEngine(client, waiter_and_worker(client), database_url=database_url) as engine:
        waiting = (await engine.send(stepline.Event("test/start-waiting", {}))).run_ids[0]
        await engine.run_until_idle()
        assert (await engine.store.get_run(waiting)).status is records.RunStatus.RUNNING  # type: ignore[union-attr]
        task = await client.tasks.enqueue(kind="k", owner="u", event=event(job=7), quota=tailor_quota(1))
        await engine.run_until_idle()
        resumed = await engine.store.get_run(waiting)
        done = await require(client, task.id)

    assert resumed is not None
    assert resumed.status is records.RunStatus.COMPLETED
    assert resumed.output == {"job": 7}
    assert done.status == "complete"
    assert done.result == "done"
    assert quota_uses(database_url, task.id) == 1


async def test_a_retry_of_an_enqueue_returns_its_task_even_when_the_quota_is_now_used_up(database_url: str) -> None:
    """The id is checked before the quota: the retry of the request that took the last use gets
    its task back, not a 429."""
    client = stepline.Stepline(app_id="tasks-retry-quota")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> str:
        return "ok"

    task_id = str(ulid.ULID())
    async with TestEngine(client, [work], database_url=database_url):
        first = await client.tasks.enqueue(kind="k", owner="u", event=event(), quota=tailor_quota(1), id=task_id)
        again = await client.tasks.enqueue(kind="k", owner="u", event=event(), quota=tailor_quota(1), id=task_id)
        with pytest.raises(stepline.QuotaExceeded):
            await client.tasks.enqueue(kind="k", owner="u", event=event(), quota=tailor_quota(1))

    assert again.id == first.id == task_id
    assert quota_uses(database_url) == 1


async def test_an_event_two_functions_listen_to_starts_both_and_the_task_follows_the_first(
    database_url: str,
) -> None:
    client = stepline.Stepline(app_id="tasks-two-functions")

    @client.function(id="alpha", trigger=stepline.on_event("test/work"))
    async def alpha(ctx: stepline.Context) -> str:
        return "alpha"

    @client.function(id="beta", trigger=stepline.on_event("test/work"))
    async def beta(ctx: stepline.Context) -> str:
        return "beta"

    async with TestEngine(client, [alpha, beta], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="k", owner="u", event=event())
        await engine.run_until_idle()
        done = await require(client, task.id)
        runs = await engine.store.list_runs(limit=10)

    assert sorted(run.function_id for run in runs) == ["tasks-two-functions-alpha", "tasks-two-functions-beta"]
    assert all(run.status is records.RunStatus.COMPLETED for run in runs)
    followed = next(run for run in runs if run.id == done.run_id)
    assert followed.task_id == task.id
    assert [run.task_id for run in runs if run.id != done.run_id] == [None]
    assert done.status == "complete"
    assert done.result == followed.output


async def test_enqueue_in_outside_a_transaction_commits_on_its_own_on_either_kind_of_connection(
    postgres_url: str, app_conn: psycopg.AsyncConnection[Any]
) -> None:
    """Idle connections: an autocommit one runs the call as its own transaction, a
    non-autocommit one gets a transaction that ``enqueue_in`` opens and commits."""
    client = stepline.Stepline(app_id="tasks-in-idle")

    @client.function(id="tailor", trigger=stepline.on_event("test/work"))
    async def tailor(ctx: stepline.Context) -> str:
        return "ok"

    async with (
        TestEngine(client, [tailor], database_url=postgres_url),
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as autocommit,
    ):
        alone = await stepline.tasks.enqueue_in(autocommit, kind="t", owner="alice", event=event())
        idle = await stepline.tasks.enqueue_in(app_conn, kind="t", owner="alice", event=event())
        left_open = app_conn.info.transaction_status
        seen = [await client.tasks.get(alone.id), await client.tasks.get(idle.id)]

    assert left_open is psycopg.pq.TransactionStatus.IDLE
    assert [task.status if task else None for task in seen] == ["pending", "pending"]


async def test_enqueue_in_resumes_a_run_waiting_for_the_tasks_event(
    postgres_url: str, app_conn: psycopg.AsyncConnection[Any]
) -> None:
    client = stepline.Stepline(app_id="tasks-in-waiters")

    async with TestEngine(client, waiter_and_worker(client), database_url=postgres_url) as engine:
        waiting = (await engine.send(stepline.Event("test/start-waiting", {}))).run_ids[0]
        await engine.run_until_idle()
        async with app_conn.transaction():
            task = await stepline.tasks.enqueue_in(app_conn, kind="t", owner="alice", event=event(job=3))
        engine.fake_clock.set_ms(real_now_ms() + 1_000)  # enqueue_in stamps real time
        done = await engine.wait_for_task(task.id)
        resumed = await engine.store.get_run(waiting)

    assert done.status is records.TaskStatus.COMPLETE
    assert resumed is not None
    assert resumed.status is records.RunStatus.COMPLETED
    assert resumed.output == {"job": 3}


# the change log streams read


async def test_each_change_is_logged_then_forgotten_and_a_stream_behind_the_log_still_sees_the_end(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = stepline.Stepline(app_id="tasks-change-log")

    @client.function(id="work", trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> str:
        await ctx.task.progress(0.5, "half")
        return "ok"

    monkeypatch.setattr(task_stream, "RECHECK_S", 0.05)
    async with TestEngine(client, [work], database_url=database_url) as engine:
        task = await client.tasks.enqueue(kind="k", owner="u", event=event())
        first = await engine.store.get_task(task.id)
        assert first is not None
        await engine.run_until_idle()
        logged = await engine.store.task_changes(task.id, 0)
        await engine.advance(timedelta(minutes=10))  # the sweeper forgets changes older than 5 minutes
        kept = await engine.store.task_changes(task.id, 0)
        followed = [change async for change in task_stream.follow(engine.store, first, 0.01) if change]

    assert [(change.version, change.status.value, change.progress) for change in logged] == [
        (2, "running", None),
        (3, "running", 0.5),
        (4, "complete", 1.0),
    ]
    assert logged[-1].result == "ok"
    assert kept == []
    assert [(change.version, change.status.value) for change in followed] == [(4, "complete")]


async def test_enqueue_in_sees_a_function_synced_after_its_previous_call(
    postgres_url: str, app_conn: psycopg.AsyncConnection[Any]
) -> None:
    """``enqueue_in`` keeps the parsed functions between calls; a sync changes the functions
    table's fingerprint, and the next call reads them again."""
    client = stepline.Stepline(app_id="tasks-in-resync")

    @client.function(id="alpha", trigger=stepline.on_event("test/work"))
    async def alpha(ctx: stepline.Context) -> str:
        return "alpha"

    @client.function(id="beta", trigger=stepline.on_event("test/work"))
    async def beta(ctx: stepline.Context) -> str:
        return "beta"

    async with TestEngine(client, [alpha], database_url=postgres_url) as engine:
        async with app_conn.transaction():
            before = await stepline.tasks.enqueue_in(app_conn, kind="t", owner="alice", event=event())
        runs_before = len(await engine.store.list_runs(limit=10))
    async with TestEngine(client, [alpha, beta], database_url=postgres_url) as engine:  # syncs beta
        async with app_conn.transaction():
            after = await stepline.tasks.enqueue_in(app_conn, kind="t", owner="alice", event=event())
        runs = await engine.store.list_runs(limit=10)

    assert before.id != after.id
    assert runs_before == 1
    started_by_after = sorted(run.function_id for run in runs if run.events[0]["id"] == after.id)
    assert started_by_after == ["tasks-in-resync-alpha", "tasks-in-resync-beta"]


@pytest.mark.parametrize("after_version", [-1, "3", True, 1.5])
async def test_a_stream_resumed_after_something_that_is_no_version_raises(after_version: Any) -> None:
    client = stepline.Stepline(app_id="tasks-stream-bad")
    async with TestEngine(client, []):
        with pytest.raises(stepline.ConfigurationError, match="after_version"):
            await anext(client.tasks.stream(str(ulid.ULID()), after_version=after_version))


class _BackendOfAnOlderShape:
    """A ``TaskBackend`` written before ``stream_task`` took ``after_version``."""

    def __init__(self, frames: list[dict[str, Any]]) -> None:
        self.frames = frames

    async def stream_task(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        for frame in self.frames:
            yield {**frame, "id": task_id}


async def test_a_task_backend_without_after_version_still_streams() -> None:
    client = stepline.Stepline(app_id="tasks-old-backend")
    async with TestEngine(client, []):
        task = await client.tasks.enqueue(kind="k", owner="u", event=stepline.Event("test/nothing"))
        client.attach_sender(None, _BackendOfAnOlderShape([task.to_wire()]))  # type: ignore[arg-type]
        streamed = [frame async for frame in client.tasks.stream(task.id)]
        watched = [frame async for frame in client.tasks.watch(task.id)]  # what task_routes streams

    assert [frame.id for frame in streamed] == [task.id]
    assert [frame.id for frame in watched if frame is not None] == [task.id]
