"""Tasks planned from synced functions that changed meanwhile, and ``stepline.tasks.connect``.

A process that plans a task's runs from the functions apps synced (a server; an app writing
tasks straight to the database) may hold an old copy of them. A plan carries the fingerprint of
the copy it was made from and the store refuses it once the ``functions`` table changed; the
planner reads them again and plans again, so no task is planned from old functions. On SQLite
and PostgreSQL where a store is enough; ``connect`` is PostgreSQL only (a SQLite database
belongs to its one server).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import stepline
import stepline.tasks
from stepline import errors
from stepline.engine import ingest, registry, synced, tasks
from stepline.storage import records, store
from stepline.testing import TestEngine
from tests.conftest import POSTGRES_ADMIN_URL, _with_database, drop_postgres_database
from tests.engine.task_support import written
from tests.engine.test_tasks import event


def function_record(function_id: str, event_name: str = "test/work", updated_at: int = 1_000) -> records.FunctionRecord:
    config: dict[str, Any] = {
        "id": function_id,
        "name": function_id,
        "triggers": [{"event": event_name}],
        "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": "http://app/api"}}},
    }
    return records.FunctionRecord(function_id, "app", function_id, config, updated_at)


async def sync(db: store.Store, *functions: records.FunctionRecord) -> None:
    async with db.transaction() as tx:
        for record in functions:
            await tx.upsert_function(record)


async def plan_from_the_table(db: store.Store) -> tuple[synced.SyncedFunctions, records.TaskPlan]:
    functions = synced.SyncedFunctions(registry.Registry())
    await functions.reload(db)
    request = tasks.request_from_body({"kind": "k", "owner": "alice", "event": {"name": "test/work", "data": {}}})
    plan = tasks.plan_task(ingest.Ingestor(functions.registry), request, 2_000, functions=functions.fingerprint)
    assert plan is not None
    return functions, plan


async def test_a_plan_from_functions_synced_since_writes_nothing_and_says_stale(db: store.Store) -> None:
    await sync(db, function_record("alpha"))
    _, plan = await plan_from_the_table(db)
    await sync(db, function_record("beta", updated_at=1_500))  # another app syncs meanwhile

    outcome = await db.create_task(plan)

    assert outcome.stale
    assert outcome.created is None
    assert await written(db) == (0, 0, 0)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda: function_record("alpha", event_name="test/other", updated_at=1_500), id="reconfigured"),
        pytest.param(None, id="removed"),
    ],
)
async def test_a_plan_from_a_function_changed_or_removed_since_is_stale(db: store.Store, change: Any) -> None:
    await sync(db, function_record("alpha"), function_record("beta"))
    _, plan = await plan_from_the_table(db)
    async with db.transaction() as tx:
        if change is None:
            await tx.delete_functions_except("app", ["beta"])
        else:
            await tx.upsert_function(change())

    assert (await db.create_task(plan)).stale
    assert await written(db) == (0, 0, 0)


async def test_a_plan_from_the_current_functions_is_written(db: store.Store) -> None:
    await sync(db, function_record("alpha"))
    _, plan = await plan_from_the_table(db)

    outcome = await db.create_task(plan)

    assert not outcome.stale
    assert outcome.created is not None
    assert len(outcome.started) == 1
    assert await written(db) == (1, 1, 1)


async def test_a_fingerprint_is_what_the_table_would_say(db: store.Store) -> None:
    await sync(db, function_record("alpha", updated_at=1_200), function_record("beta", updated_at=1_700))
    async with db.transaction() as tx:
        seen = await tx.functions_fingerprint()

    assert seen == records.FunctionsFingerprint.of(await db.list_functions())
    assert seen.count == 2
    assert seen.latest == 1_700


# stepline.tasks.connect: client.tasks straight in PostgreSQL


def worker(client: stepline.Stepline, name: str = "work") -> Any:
    @client.function(id=name, trigger=stepline.on_event("test/work"))
    async def work(ctx: stepline.Context) -> dict[str, Any]:
        await ctx.task.progress(0.5, "halfway")
        return {"done": ctx.event.data.get("job")}

    return work


def test_connect_refuses_sqlite(tmp_path: Any) -> None:
    client = stepline.Stepline(app_id="direct-sqlite")

    with pytest.raises(errors.ConfigurationError, match="only on PostgreSQL"):
        stepline.tasks.connect(client, f"sqlite:///{tmp_path}/x.db")


async def test_connected_client_enqueues_reads_and_streams_tasks_the_engine_runs(
    postgres_url: str,
) -> None:
    """The app's client writes the task itself; an engine elsewhere (here a background one in
    the same process, on its own client) runs it; the app reads, lists and streams it."""
    runner = stepline.Stepline(app_id="direct")
    app = stepline.Stepline(app_id="direct")
    async with (
        stepline.Engine(runner, [worker(runner)], database_url=postgres_url),
        stepline.tasks.connect(app, postgres_url) as direct,
    ):
        task = await app.tasks.enqueue(kind="k", owner="alice", event=event(job=7))
        frames = [frame async for frame in app.tasks.stream(task.id)]
        listed = await app.tasks.list(owner="alice")
        stored = await direct.store.get_task(task.id)

    assert task.status == "pending"
    assert frames[0].id == task.id
    assert frames[-1].status == "complete"
    assert frames[-1].result == {"done": 7}
    assert frames[-1].progress == 1.0
    assert any(frame.message == "halfway" for frame in frames)
    assert [item.id for item in listed.tasks] == [task.id]
    assert stored is not None
    assert stored.status is records.TaskStatus.COMPLETE


async def test_a_function_synced_after_the_client_connected_still_starts(postgres_url: str) -> None:
    """The connected client read the functions at start, when there were none; the enqueue's plan
    is refused as stale once a sync happened, and planned again from the new functions."""
    app = stepline.Stepline(app_id="direct-late")
    runner = stepline.Stepline(app_id="direct-late")
    async with stepline.tasks.connect(app, postgres_url) as direct:
        assert direct.registry.functions == {}
        async with TestEngine(runner, [worker(runner)], database_url=postgres_url) as engine:  # syncs work
            task = await app.tasks.enqueue(kind="k", owner="alice", event=event(job=1))
            await engine.advance(timedelta(seconds=1))  # past the item's time on the app's (real) clock
            done = await app.tasks.get(task.id)

    assert task.run_id is not None
    assert done is not None
    assert done.status == "complete"
    assert set(direct.registry.functions) == {"direct-late-work"}


async def test_a_connected_client_cancels_and_reports_progress(postgres_url: str) -> None:
    runner = stepline.Stepline(app_id="direct-cancel")
    app = stepline.Stepline(app_id="direct-cancel")
    async with (
        TestEngine(runner, [worker(runner)], database_url=postgres_url),  # synced, never run here
        stepline.tasks.connect(app, postgres_url),
    ):
        task = await app.tasks.enqueue(kind="k", owner="alice", event=event())
        recorded = await app.task_backend().report_progress(task.id, 0.25, "a quarter")
        reported = await app.tasks.get(task.id)
        cancelled = await app.tasks.cancel(task.id)

    assert recorded
    assert reported is not None
    assert (reported.progress, reported.message) == (0.25, "a quarter")
    assert cancelled.status == "cancelled"


async def test_quota_and_bad_input_are_refused_as_over_http(postgres_url: str) -> None:
    runner = stepline.Stepline(app_id="direct-quota")
    app = stepline.Stepline(app_id="direct-quota")
    quota = stepline.Quota(feature="f", limit=1, window="1h")
    async with (
        TestEngine(runner, [worker(runner)], database_url=postgres_url) as engine,
        stepline.tasks.connect(app, postgres_url),
    ):
        await app.tasks.enqueue(kind="k", owner="alice", event=event(), quota=quota)
        with pytest.raises(stepline.QuotaExceeded):
            await app.tasks.enqueue(kind="k", owner="alice", event=event(), quota=quota)
        with pytest.raises(errors.TaskNotFoundError):
            await app.tasks.cancel("01J00000000000000000000000")
        with pytest.raises(errors.ConfigurationError, match="ULID"):
            await app.tasks.enqueue(kind="k", owner="alice", event=event(), id="not-a-ulid")
        with pytest.raises(errors.ConfigurationError, match="pending_timeout"):
            await app.tasks.enqueue(kind="k", owner="alice", event=event(), pending_timeout=0.5)
        counted = await written(engine.store)

    assert counted == (1, 1, 1)


async def test_leaving_connect_sends_client_tasks_back_to_the_server(postgres_url: str) -> None:
    app = stepline.Stepline(app_id="direct-leave", is_dev=True)
    over_http = type(app.task_backend())
    async with stepline.tasks.connect(app, postgres_url):
        assert type(app.task_backend()) is not over_http
    assert type(app.task_backend()) is over_http


async def test_sync_routes_reach_a_connected_client_from_worker_threads(postgres_url: str) -> None:
    """Flask-style code (a ``def`` route on FastAPI's thread pool) uses ``enqueue_sync``."""
    runner = stepline.Stepline(app_id="direct-sync")
    app = stepline.Stepline(app_id="direct-sync")
    async with (
        stepline.Engine(runner, [worker(runner)], database_url=postgres_url),  # runs the task meanwhile
        stepline.tasks.connect(app, postgres_url),
    ):
        task = await asyncio.to_thread(app.tasks.enqueue_sync, kind="k", owner="bob", event=event())
        seen = await asyncio.to_thread(app.tasks.get_sync, task.id)
        followed = await asyncio.to_thread(lambda: [change.status for change in app.tasks.stream_sync(task.id)])
        listed = await asyncio.to_thread(app.tasks.list_sync, owner="bob")
        other = await asyncio.to_thread(app.tasks.enqueue_sync, kind="k", owner="bob", event=event("never/served"))
        following = app.tasks.stream_sync(other.id)
        first = await asyncio.to_thread(next, following)
        await asyncio.to_thread(following.close)  # stops following a task that never ends
        cancelled = await asyncio.to_thread(app.tasks.cancel_sync, other.id)

    assert seen is not None
    assert seen.id == task.id
    assert seen.owner == "bob"
    assert followed[-1] == "complete"
    assert [found.id for found in listed.tasks] == [task.id]
    assert first.status == "pending"
    assert cancelled.status == "cancelled"


async def test_connect_migrates_nothing_and_refuses_a_database_no_server_migrated(postgres_template: str) -> None:
    """The app must not change the servers' schema (an app deployed with a newer Stepline would
    upgrade it under older servers): an unmigrated database is refused, and left untouched."""
    name = f"stepline_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _with_database(POSTGRES_ADMIN_URL, name)
        app = stepline.Stepline(app_id="direct-unmigrated")
        with pytest.raises(errors.MigrationError, match=r"lacks migrations 0001_initial\.sql"):
            async with stepline.tasks.connect(app, url):
                pass
        with psycopg.connect(url) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    finally:
        drop_postgres_database(name)
    assert tables == (0,)


async def test_a_database_that_went_away_is_event_send_error_as_a_server_would_be(postgres_url: str) -> None:
    """Routes written against the HTTP contract catch ``EventSendError`` to answer 503."""
    app = stepline.Stepline(app_id="direct-down")
    async with stepline.tasks.connect(app, postgres_url):
        name = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:  # every connection ends
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            with pytest.raises(errors.EventSendError, match="Stepline database is unavailable"):
                await app.tasks.enqueue(kind="k", owner="alice", event=event())
        finally:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


async def test_a_sync_call_on_the_loops_own_thread_is_refused_instead_of_hanging(postgres_url: str) -> None:
    app = stepline.Stepline(app_id="direct-same-thread")
    async with stepline.tasks.connect(app, postgres_url):
        with pytest.raises(errors.ConfigurationError, match="await the async method"):
            app.tasks.get_sync("01J00000000000000000000000")
