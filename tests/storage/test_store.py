"""Behaviour of every ``Store`` and ``Transaction`` verb, on each backend (the ``db`` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stepline.storage import open_store, records, store

_ids = itertools.count(1)


def new_id(prefix: str = "id") -> str:
    """Ids that sort in creation order, like the ULIDs the engine uses."""
    return f"{prefix}{next(_ids):08d}"


def make_event(**changes: Any) -> records.EventRecord:
    internal_id = new_id("ev")
    event = records.EventRecord(
        internal_id=internal_id,
        id=internal_id,
        name="app/user.created",
        data={"user": {"id": 7, "tags": ["a", "b"]}, "ok": True, "ratio": 0.5},
        ts=1_700_000_000_000,
        received_at=1_700_000_000_123,
    )
    return dataclasses.replace(event, **changes)


def make_run(event_id: str = "ev-none", **changes: Any) -> records.RunRecord:
    run = records.RunRecord(
        id=new_id("run"),
        function_id="app-fn",
        event_id=event_id,
        events=[{"id": event_id, "name": "app/user.created", "data": {}, "ts": 1, "user": {}}],
        status=records.RunStatus.QUEUED,
        created_at=1_000,
    )
    return dataclasses.replace(run, **changes)


def make_step(run_id: str, step_id: str, seq: int, **changes: Any) -> records.StepRecord:
    step = records.StepRecord(
        run_id=run_id,
        step_id=step_id,
        name=f"name-{step_id}",
        kind="run",
        result={"data": {"n": seq}},
        seq=seq,
        attempts=1,
        started_at=2_000 + seq,
        ended_at=2_100 + seq,
    )
    return dataclasses.replace(step, **changes)


def make_item(available_at: int, run_id: str = "run-x", **changes: Any) -> records.QueueItem:
    item = records.QueueItem(
        id=new_id("item"),
        run_id=run_id,
        kind=records.ItemKind.DISCOVER,
        available_at=available_at,
        created_at=500,
    )
    return dataclasses.replace(item, **changes)


def make_pause(run_id: str = "run-x", **changes: Any) -> records.PauseRecord:
    pause = records.PauseRecord(
        id=new_id("pause"),
        run_id=run_id,
        step_id="step-wait",
        kind=records.PauseKind.WAIT,
        expires_at=90_000,
        created_at=1_000,
        timeout_item_id=new_id("item"),
        event_name="app/approved",
        expression="async.data.id == event.data.id",
        event={"name": "app/user.created", "data": {"id": 7}},
    )
    return dataclasses.replace(pause, **changes)


async def enqueue(db: store.Store, *items: records.QueueItem) -> None:
    async with db.transaction() as tx:
        for item in items:
            await tx.enqueue(item)


# events and runs


async def test_event_round_trips_every_field(db: store.Store) -> None:
    full = make_event(id="user-supplied", user={"source": "api"}, v="2024-01-01.1")
    bare = make_event()
    async with db.transaction() as tx:
        await tx.insert_event(full)
        await tx.insert_event(bare)

    assert await db.get_event(full.internal_id) == full
    assert await db.get_event(bare.internal_id) == bare
    assert await db.get_event("missing") is None


async def test_run_round_trips_every_field(db: store.Store) -> None:
    full = make_run(
        status=records.RunStatus.FAILED,
        started_at=1_100,
        ended_at=1_900,
        output={"result": [1, 2.5, "x", None, {"nested": True}]},
        error={"name": "Error", "message": "boom", "stack": "line 1"},
        pending=["abc", "def"],
        disable_immediate=True,
        request_version=2,
        step_count=4,
        correlation_id="run-parent.step-1",
    )
    bare = make_run()
    async with db.transaction() as tx:
        await tx.insert_run(full)
        await tx.insert_run(bare)

    got = await db.get_run(full.id)
    assert got == full
    assert got is not None
    assert isinstance(got.status, records.RunStatus)
    got_bare = await db.get_run(bare.id)
    assert got_bare == bare
    assert got_bare is not None
    assert got_bare.output is None
    assert got_bare.error is None
    assert got_bare.disable_immediate is False
    assert await db.get_run("missing") is None


@pytest.mark.parametrize("output", [0, False, "", [], {}, "text", 1.5])
async def test_run_output_keeps_falsy_json_values(db: store.Store, output: Any) -> None:
    run = make_run(status=records.RunStatus.COMPLETED, output=output)
    async with db.transaction() as tx:
        await tx.insert_run(run)

    got = await db.get_run(run.id)
    assert got is not None
    assert got.output == output
    assert type(got.output) is type(output)


async def test_update_run_writes_every_mutable_field(db: store.Store) -> None:
    run = make_run()
    async with db.transaction() as tx:
        await tx.insert_run(run)

    async with db.transaction() as tx:
        locked = await tx.lock_run(run.id)
        assert locked == run
        assert locked is not None
        locked.status = records.RunStatus.COMPLETED
        locked.started_at = 1_200
        locked.ended_at = 1_300
        locked.output = {"done": True}
        locked.error = {"message": "recovered"}
        locked.pending = ["p1"]
        locked.disable_immediate = True
        locked.request_version = 1
        locked.step_count = 3
        await tx.update_run(locked)

    assert await db.get_run(run.id) == locked

    async with db.transaction() as tx:
        assert await tx.lock_run("missing") is None
        again = await tx.lock_run(run.id)
        assert again is not None
        again.output = None
        again.error = None
        await tx.update_run(again)

    cleared = await db.get_run(run.id)
    assert cleared is not None
    assert cleared.output is None
    assert cleared.error is None


async def test_runs_for_event(db: store.Store) -> None:
    event, other = make_event(), make_event()
    first, second = make_run(event.internal_id), make_run(event.internal_id)
    unrelated = make_run(other.internal_id)
    async with db.transaction() as tx:
        await tx.insert_event(event)
        await tx.insert_event(other)
        for run in (second, unrelated, first):
            await tx.insert_run(run)

    assert await db.runs_for_event(event.internal_id) == [first, second]
    assert await db.runs_for_event(other.internal_id) == [unrelated]
    assert await db.runs_for_event("missing") == []


async def test_idempotency_key_is_claimed_once_until_it_expires(db: store.Store) -> None:
    async with db.transaction() as tx:
        assert await tx.claim_idempotency_key("app-fn", "k1", "run-1", now=1_000, expires_at=5_000)
        assert not await tx.claim_idempotency_key("app-fn", "k1", "run-2", now=1_001, expires_at=6_000)
    async with db.transaction() as tx:
        assert not await tx.claim_idempotency_key("app-fn", "k1", "run-3", now=4_999, expires_at=9_000)
        # Another function, or another key, is independent.
        assert await tx.claim_idempotency_key("app-other", "k1", "run-4", now=1_000, expires_at=5_000)
        assert await tx.claim_idempotency_key("app-fn", "k2", "run-5", now=1_000, expires_at=5_000)
    async with db.transaction() as tx:
        assert await tx.claim_idempotency_key("app-fn", "k1", "run-6", now=5_000, expires_at=9_000)
        assert not await tx.claim_idempotency_key("app-fn", "k1", "run-7", now=5_001, expires_at=9_000)


# steps


async def test_record_step_never_overwrites(db: store.Store) -> None:
    step = make_step("run-1", "s1", 0)
    async with db.transaction() as tx:
        assert await tx.record_step(step)
    async with db.transaction() as tx:
        assert not await tx.record_step(make_step("run-1", "s1", 5, result={"error": {"message": "late"}}))

    assert await db.list_steps("run-1") == [step]


async def test_list_steps_in_seq_order(db: store.Store) -> None:
    steps = [
        make_step("run-1", "zzz", 0),
        make_step("run-1", "aaa", 1, result=None, kind="sleep"),
        make_step("run-1", "mmm", 2, result={"error": {"name": "Error", "message": "x"}}),
    ]
    async with db.transaction() as tx:
        for step in reversed(steps):
            assert await tx.record_step(step)
        assert await tx.record_step(make_step("run-2", "aaa", 0))

    assert await db.list_steps("run-1") == steps
    assert await db.list_steps("missing") == []


async def test_get_run_with_steps_reads_both_at_once(db: store.Store) -> None:
    run, other = make_run(), make_run()
    steps = [make_step(run.id, "b", 0), make_step(run.id, "a", 1, result=None, kind="sleep")]
    async with db.transaction() as tx:
        await tx.insert_run(run)
        await tx.insert_run(other)
        for step in reversed(steps):
            assert await tx.record_step(step)
        assert await tx.record_step(make_step(other.id, "c", 0))

    assert await db.get_run_with_steps(run.id) == (run, steps)
    assert await db.get_run_with_steps(run.id) == (await db.get_run(run.id), await db.list_steps(run.id))
    assert await db.get_run_with_steps("missing") is None
    assert await db.get_run_with_steps(new_id("run")) is None


# queue


async def test_claim_returns_ready_items_oldest_first_and_leases_them(db: store.Store) -> None:
    oldest = make_item(100, payload={"pause_id": "p1"}, step_id="s1", attempt=2)
    middle = make_item(200, kind=records.ItemKind.WAKE)
    newest = make_item(300)
    future = make_item(5_000)
    await enqueue(db, newest, future, middle, oldest)
    assert await db.count_queue() == 4

    claimed = await db.claim(now=1_000, limit=2, lease_until=2_000)
    assert claimed == [
        dataclasses.replace(oldest, available_at=2_000, claims=1),
        dataclasses.replace(middle, available_at=2_000, claims=1),
    ]
    assert await db.claim(now=1_000, limit=10, lease_until=2_000) == [
        dataclasses.replace(newest, available_at=2_000, claims=1)
    ]
    # Everything ready is leased: a second claim at the same time gets nothing.
    assert await db.claim(now=1_000, limit=10, lease_until=2_000) == []
    # After the lease expires the items are claimable again, with a new token.
    reclaimed = await db.claim(now=2_000, limit=10, lease_until=3_000)
    assert [(item.id, item.claims, item.available_at) for item in reclaimed] == [
        (oldest.id, 2, 3_000),
        (middle.id, 2, 3_000),
        (newest.id, 2, 3_000),
    ]
    assert await db.count_queue() == 4


async def test_claim_with_nothing_ready(db: store.Store) -> None:
    assert await db.claim(now=1_000, limit=10, lease_until=2_000) == []
    await enqueue(db, make_item(1_001))
    assert await db.claim(now=1_000, limit=10, lease_until=2_000) == []


async def test_concurrent_claims_never_share_an_item(db: store.Store) -> None:
    items = [make_item(100 + n) for n in range(20)]
    await enqueue(db, *items)

    batches = await asyncio.gather(*(db.claim(now=1_000, limit=3, lease_until=9_000) for _ in range(10)))

    ids = [item.id for batch in batches for item in batch]
    assert len(ids) == len(set(ids)) == 20
    assert set(ids) == {item.id for item in items}


async def test_complete_item_needs_the_current_claims_token(db: store.Store) -> None:
    await enqueue(db, make_item(100))
    (first,) = await db.claim(now=1_000, limit=1, lease_until=2_000)
    (second,) = await db.claim(now=2_000, limit=1, lease_until=3_000)
    assert second.claims == first.claims + 1

    async with db.transaction() as tx:
        assert not await tx.complete_item(first.id, first.claims)
    assert await db.count_queue() == 1
    async with db.transaction() as tx:
        assert await tx.complete_item(second.id, second.claims)
    assert await db.count_queue() == 0
    async with db.transaction() as tx:
        assert not await tx.complete_item(second.id, second.claims)


async def test_reschedule_item_needs_the_current_claims_token(db: store.Store) -> None:
    await enqueue(db, make_item(100))
    (first,) = await db.claim(now=1_000, limit=1, lease_until=2_000)
    (held,) = await db.claim(now=2_000, limit=1, lease_until=3_000)
    changed = dataclasses.replace(
        held,
        kind=records.ItemKind.STEP,
        step_id="step-9",
        attempt=3,
        available_at=10_000,
        payload={"retry": True},
    )

    async with db.transaction() as tx:
        assert not await tx.reschedule_item(changed, first.claims)
    async with db.transaction() as tx:
        assert await tx.reschedule_item(changed, held.claims)

    # The lease is released (the token moved on, so the old holder can no longer extend it): the
    # item waits until its new time, then comes back as written.
    assert await db.extend_leases([(held.id, held.claims)], 50_000) == set()
    assert await db.claim(now=9_999, limit=10, lease_until=20_000) == []
    (again,) = await db.claim(now=10_000, limit=10, lease_until=20_000)
    assert again == dataclasses.replace(changed, available_at=20_000, claims=held.claims + 2)


async def test_extend_leases_returns_only_the_leases_still_held(db: store.Store) -> None:
    kept, lost = make_item(100), make_item(200)
    await enqueue(db, kept, lost)
    claimed = await db.claim(now=1_000, limit=10, lease_until=2_000)
    tokens = {item.id: item.claims for item in claimed}
    # kept's holder extended in time; lost's lease expired and someone else claimed it.
    assert await db.extend_leases([(kept.id, tokens[kept.id])], lease_until=5_000) == {kept.id}
    (stolen,) = await db.claim(now=2_000, limit=10, lease_until=9_000)
    assert stolen.id == lost.id

    held = await db.extend_leases(
        [(kept.id, tokens[kept.id]), (lost.id, tokens[lost.id]), ("missing", 1)], lease_until=8_000
    )

    assert held == {kept.id}
    assert await db.claim(now=7_999, limit=10, lease_until=9_000) == []
    assert [item.id for item in await db.claim(now=8_000, limit=10, lease_until=9_000)] == [kept.id]
    assert await db.extend_leases([], lease_until=9_000) == set()


async def test_delete_item_ignores_the_lease(db: store.Store) -> None:
    leased, waiting = make_item(100), make_item(5_000)
    await enqueue(db, leased, waiting)
    await db.claim(now=1_000, limit=10, lease_until=2_000)

    async with db.transaction() as tx:
        await tx.delete_item(leased.id)
        await tx.delete_item(waiting.id)
        await tx.delete_item("missing")

    assert await db.count_queue() == 0


async def test_delete_run_items(db: store.Store) -> None:
    mine = [make_item(100, run_id="run-a"), make_item(200, run_id="run-a")]
    other = make_item(300, run_id="run-b")
    await enqueue(db, *mine, other)
    await db.claim(now=150, limit=1, lease_until=2_000)

    async with db.transaction() as tx:
        assert await tx.delete_run_items("run-a") == 2
        assert await tx.delete_run_items("run-a") == 0

    assert await db.count_queue() == 1
    assert [item.id for item in await db.claim(now=1_000, limit=10, lease_until=2_000)] == [other.id]


async def test_next_available_at(db: store.Store) -> None:
    assert await db.next_available_at() is None
    await enqueue(db, make_item(700), make_item(300), make_item(900))
    assert await db.next_available_at() == 300

    await db.claim(now=300, limit=1, lease_until=800)
    assert await db.next_available_at() == 700

    async with db.transaction() as tx:
        await tx.delete_run_items("run-x")
    assert await db.next_available_at() is None


async def test_claim_and_peek_tells_what_it_leased_and_when_the_queue_is_next_due(db: store.Store) -> None:
    assert await db.claim_and_peek(now=1_000, limit=10, lease_until=60_000) == records.ClaimedItems([], None)
    first, second, later = make_item(100), make_item(200), make_item(5_000)
    await enqueue(db, first, second, later)

    # The peek comes after the leases: the items leased are due again only when their lease ends.
    claimed = await db.claim_and_peek(now=1_000, limit=1, lease_until=60_000)
    assert [item.id for item in claimed.items] == [first.id]
    assert claimed.next_available_at == 200  # more is ready: the caller claims again at once

    claimed = await db.claim_and_peek(now=1_000, limit=10, lease_until=60_000)
    assert [item.id for item in claimed.items] == [second.id]
    assert claimed.next_available_at == 5_000

    claimed = await db.claim_and_peek(now=1_000, limit=10, lease_until=60_000)
    assert claimed == records.ClaimedItems([], 5_000)


async def test_count_queue(db: store.Store) -> None:
    assert await db.count_queue() == 0
    await enqueue(db, *(make_item(n) for n in range(5)))
    assert await db.count_queue() == 5


# pauses


async def test_pauses_for_event_and_by_correlation(db: store.Store) -> None:
    first = make_pause("run-a")
    second = make_pause("run-b", expression=None, event=None)
    elsewhere = make_pause("run-c", event_name="app/rejected")
    invoke = make_pause(
        "run-d",
        kind=records.PauseKind.INVOKE,
        event_name=None,
        expression=None,
        event=None,
        correlation_id="run-d.step-1",
    )
    async with db.transaction() as tx:
        for pause in (invoke, second, elsewhere, first):
            await tx.insert_pause(pause)

    async with db.transaction() as tx:
        assert await tx.pauses_for_event("app/approved") == [first, second]
        assert await tx.pauses_for_event("app/rejected") == [elsewhere]
        assert await tx.pauses_for_event("app/none") == []
        assert await tx.pause_by_correlation("run-d.step-1") == invoke
        assert await tx.pause_by_correlation("run-x.step-1") is None
        assert await tx.get_pause(second.id) == second
        assert await tx.get_pause("missing") is None


async def test_delete_pause_wins_only_once(db: store.Store) -> None:
    pause = make_pause()
    async with db.transaction() as tx:
        await tx.insert_pause(pause)

    async with db.transaction() as tx:
        assert await tx.delete_pause(pause.id)
    async with db.transaction() as tx:
        assert not await tx.delete_pause(pause.id)
        assert await tx.get_pause(pause.id) is None
        assert await tx.pauses_for_event("app/approved") == []


async def test_delete_run_pauses(db: store.Store) -> None:
    mine = [make_pause("run-a"), make_pause("run-a", event_name="app/other")]
    other = make_pause("run-b")
    async with db.transaction() as tx:
        for pause in (*mine, other):
            await tx.insert_pause(pause)

    async with db.transaction() as tx:
        assert await tx.delete_run_pauses("run-a") == 2
        assert await tx.delete_run_pauses("run-a") == 0
        assert await tx.pauses_for_event("app/approved") == [other]


# functions and cron


def make_function(app_id: str, name: str) -> records.FunctionRecord:
    return records.FunctionRecord(
        id=f"{app_id}-{name}",
        app_id=app_id,
        name=name,
        config={"triggers": [{"cron": "* * * * *"}], "retries": 3},
        updated_at=1_000,
    )


async def test_cron_upsert_get_and_due(db: store.Store) -> None:
    async with db.transaction() as tx:
        assert await tx.get_cron("app-a") is None
        await tx.upsert_cron(records.CronRecord("app-a", "*/5 * * * *", 3_000))
        await tx.upsert_cron(records.CronRecord("app-b", "0 * * * *", 1_000))
        await tx.upsert_cron(records.CronRecord("app-c", "0 0 * * *", 9_000))
    async with db.transaction() as tx:
        await tx.upsert_cron(records.CronRecord("app-a", "TZ=Europe/Paris */10 * * * *", 2_000))
        assert await tx.get_cron("app-a") == records.CronRecord("app-a", "TZ=Europe/Paris */10 * * * *", 2_000)

    assert await db.due_crons(now=999) == []
    assert await db.due_crons(now=2_000) == [
        records.CronRecord("app-b", "0 * * * *", 1_000),
        records.CronRecord("app-a", "TZ=Europe/Paris */10 * * * *", 2_000),
    ]


async def test_advance_cron_is_compare_and_set(db: store.Store) -> None:
    async with db.transaction() as tx:
        await tx.upsert_cron(records.CronRecord("app-a", "* * * * *", 60_000))

    async with db.transaction() as tx:
        assert await tx.advance_cron("app-a", expected_next=60_000, new_next=120_000)
    async with db.transaction() as tx:
        assert not await tx.advance_cron("app-a", expected_next=60_000, new_next=120_000)
        assert not await tx.advance_cron("app-missing", expected_next=60_000, new_next=120_000)
        assert await tx.get_cron("app-a") == records.CronRecord("app-a", "* * * * *", 120_000)


async def test_delete_crons_except(db: store.Store) -> None:
    async with db.transaction() as tx:
        for app_id, name in [("shop", "daily"), ("shop", "hourly"), ("shop", "weekly"), ("blog", "daily")]:
            function = make_function(app_id, name)
            await tx.upsert_function(function)
            await tx.upsert_function(dataclasses.replace(function, updated_at=2_000))
            await tx.upsert_cron(records.CronRecord(function.id, "0 * * * *", 1_000))

    async with db.transaction() as tx:
        await tx.delete_crons_except(["shop-hourly"], "shop")
    assert [cron.function_id for cron in await db.due_crons(now=1_000)] == ["blog-daily", "shop-hourly"]

    async with db.transaction() as tx:
        await tx.delete_crons_except([], "shop")
    assert [cron.function_id for cron in await db.due_crons(now=1_000)] == ["blog-daily"]


async def _fingerprint(db: store.Store) -> records.FunctionsFingerprint:
    async with db.transaction() as tx:
        return await tx.functions_fingerprint()


async def test_functions_fingerprint_follows_every_change_to_the_functions(db: store.Store) -> None:
    """The fingerprint is kept in a row of its own (migration 0013): after each kind of change,
    in one transaction or several, it is still that of the functions actually stored."""
    assert await _fingerprint(db) == records.FunctionsFingerprint(0, 0, 0)
    shop_daily, shop_hourly, blog_daily = (
        make_function("shop", "daily"),
        make_function("shop", "hourly"),
        make_function("blog", "daily"),
    )
    changes: list[Callable[[store.Transaction], Awaitable[None]]] = [
        lambda tx: tx.upsert_function(shop_daily),
        lambda tx: tx.upsert_function(shop_hourly),
        lambda tx: tx.upsert_function(blog_daily),
        # synced again unchanged: a later sync time, the same version
        lambda tx: tx.upsert_function(dataclasses.replace(shop_daily, updated_at=5_000)),
        # a changed configuration: a new version
        lambda tx: tx.upsert_function(dataclasses.replace(shop_hourly, config={"triggers": [], "retries": 1})),
        lambda tx: tx.delete_functions_except("shop", ["shop-daily"]),
        lambda tx: tx.delete_functions_except("blog", []),
    ]
    seen = {await _fingerprint(db)}
    for change in changes:
        async with db.transaction() as tx:
            await change(tx)
        stored = records.FunctionsFingerprint.of(await db.list_functions())
        assert await _fingerprint(db) == stored
        seen.add(stored)
    assert len(seen) == len(changes) + 1  # every change moved it
    assert await _fingerprint(db) == records.FunctionsFingerprint(1, 5_000, 1)

    async with db.transaction() as tx:  # a whole sync in one transaction
        for function in (shop_hourly, blog_daily):
            await tx.upsert_function(dataclasses.replace(function, updated_at=7_000))
        await tx.delete_functions_except("shop", ["shop-hourly"])
    assert await _fingerprint(db) == records.FunctionsFingerprint.of(await db.list_functions())
    assert await _fingerprint(db) == records.FunctionsFingerprint(2, 7_000, 2)


async def test_insert_events_checking_says_whether_the_functions_are_still_those_planned_from(db: store.Store) -> None:
    planned_from = await _fingerprint(db)
    async with db.transaction() as tx:
        assert await tx.insert_events_checking([make_event(internal_id="ev-1", id="ev-1")], planned_from)
    async with db.transaction() as tx:
        await tx.upsert_function(make_function("shop", "daily"))  # a sync the planner did not see
    async with db.transaction() as tx:
        assert not await tx.insert_events_checking([make_event(internal_id="ev-2", id="ev-2")], planned_from)
        assert await tx.insert_events_checking([make_event(internal_id="ev-3", id="ev-3")], await _current(db))

    assert sorted(event.id for event in await db.list_events()) == ["ev-1", "ev-2", "ev-3"]


async def _current(db: store.Store) -> records.FunctionsFingerprint:
    return records.FunctionsFingerprint.of(await db.list_functions())


# transactions and wake-ups


class Boom(Exception):
    pass


async def in_transaction(db: store.Store, body: Callable[[store.Transaction], Awaitable[None]]) -> None:
    async with db.transaction() as tx:
        await body(tx)


async def test_transaction_rolls_back_on_exception(db: store.Store) -> None:
    event = make_event()
    run = make_run(event.internal_id)

    async def write_then_fail(tx: store.Transaction) -> None:
        await tx.insert_event(event)
        await tx.insert_run(run)
        await tx.enqueue(make_item(100, run_id=run.id))
        assert await tx.record_step(make_step(run.id, "s1", 0))
        await tx.upsert_cron(records.CronRecord("app-a", "* * * * *", 1_000))
        raise Boom

    with pytest.raises(Boom):
        await in_transaction(db, write_then_fail)

    assert await db.get_event(event.internal_id) is None
    assert await db.get_run(run.id) is None
    assert await db.count_queue() == 0
    assert await db.list_steps(run.id) == []
    assert await db.due_crons(now=10_000) == []
    # The store is still usable.
    async with db.transaction() as tx:
        await tx.insert_run(run)
    assert await db.get_run(run.id) == run


async def test_reads_see_only_committed_data(db: store.Store) -> None:
    run = make_run()
    async with db.transaction() as tx:
        await tx.insert_run(run)
        assert await db.get_run(run.id) is None
    assert await db.get_run(run.id) == run


async def _wait_elapsed(db: store.Store, seconds: float) -> float:
    started = time.monotonic()
    await db.wait_for_work(seconds)
    return time.monotonic() - started


async def test_wait_for_work_wakes_after_a_commit_that_enqueued(db: store.Store) -> None:
    waiter = asyncio.create_task(_wait_elapsed(db, 5.0))
    await asyncio.sleep(0.05)  # let the waiter block
    assert not waiter.done()
    await enqueue(db, make_item(100))

    assert await asyncio.wait_for(waiter, 2.0) < 1.0


async def test_wait_for_work_wakes_after_a_reschedule(db: store.Store) -> None:
    await enqueue(db, make_item(100))
    (item,) = await db.claim(now=1_000, limit=1, lease_until=2_000)
    await db.wait_for_work(0.01)  # consume the wake-up of the enqueue, if any
    waiter = asyncio.create_task(_wait_elapsed(db, 5.0))
    await asyncio.sleep(0.05)
    async with db.transaction() as tx:
        assert await tx.reschedule_item(dataclasses.replace(item, available_at=1_500), item.claims)

    assert await asyncio.wait_for(waiter, 2.0) < 1.0


async def test_wait_for_work_times_out_without_work(db: store.Store) -> None:
    async with db.transaction() as tx:
        await tx.insert_event(make_event())

    elapsed = await _wait_elapsed(db, 0.2)

    assert 0.15 <= elapsed < 2.0


async def test_wait_for_work_times_out_after_a_rolled_back_enqueue(db: store.Store) -> None:

    async def enqueue_then_fail(tx: store.Transaction) -> None:
        await tx.enqueue(make_item(100))
        raise Boom

    with pytest.raises(Boom):
        await in_transaction(db, enqueue_then_fail)

    elapsed = await _wait_elapsed(db, 0.2)

    assert 0.15 <= elapsed < 2.0


# opening


async def test_reopening_a_migrated_database_keeps_its_data(database_url: str) -> None:
    first = await open_store(database_url)
    run = make_run()
    try:
        async with first.transaction() as tx:
            await tx.insert_run(run)
    finally:
        await first.close()

    second = await open_store(database_url)
    try:
        assert await second.get_run(run.id) == run
    finally:
        await second.close()


async def test_function_version_moves_only_when_its_configuration_changes(db: store.Store) -> None:
    config = {"id": "app-fn", "triggers": [{"event": "a/b"}]}
    for updated_at, cfg in [(1, config), (2, config), (3, config | {"name": "renamed"}), (4, config)]:
        async with db.transaction() as tx:
            await tx.upsert_function(records.FunctionRecord("app-fn", "app", "fn", cfg, updated_at))
        (found,) = await db.list_functions()
        expected = {1: 1, 2: 1, 3: 2, 4: 3}[updated_at]
        assert (found.updated_at, found.version) == (updated_at, expected)
