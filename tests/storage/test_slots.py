"""Concurrency slots at claim time (``storage.slots``) and the throttle state, on each backend.

Runs get their keys through ``insert_run_concurrency`` exactly as the engine gives them, and
their items inherit the keys when enqueued; everything else is the plain ``Store`` API.
"""

from __future__ import annotations

import asyncio

from stepline.storage import records, store
from tests.storage.test_store import make_item, make_run

LEASE = 30_000


async def start_runs(
    db: store.Store, count: int, key: str, limit: int, *, at: int = 100, second: tuple[str, int] | None = None
) -> list[records.QueueItem]:
    """``count`` runs under concurrency ``key`` (and ``second``), each with one discover item
    ready at ``at``, ``at + 1``, ... (so claim order is creation order)."""
    items: list[records.QueueItem] = []
    async with db.transaction() as tx:
        for n in range(count):
            run = make_run()
            await tx.insert_run(run)
            keys = records.RunConcurrency(run.id, key, limit, *(second or (None, None)))
            await tx.insert_run_concurrency([keys])
            item = make_item(at + n, run_id=run.id, kind=records.ItemKind.DISCOVER)
            await tx.enqueue(item)
            items.append(item)
    return items


async def plain_items(db: store.Store, count: int, at: int) -> list[records.QueueItem]:
    items = [make_item(at + n, kind=records.ItemKind.DISCOVER) for n in range(count)]
    async with db.transaction() as tx:
        await tx.enqueue_many(items)
    return items


async def complete(db: store.Store, item: records.QueueItem) -> None:
    async with db.transaction() as tx:
        assert await tx.complete_item(item.id, item.claims)


async def test_a_key_at_capacity_parks_its_items_until_a_slot_frees(db: store.Store) -> None:
    items = await start_runs(db, 5, "fn-a", limit=2)

    first = await db.claim(1_000, 10, 1_000 + LEASE)
    assert [item.id for item in first] == [items[0].id, items[1].id]
    assert await db.claim(1_000, 10, 1_000 + LEASE) == []  # the rest are parked, not re-read
    assert await db.count_queue() == 5

    await complete(db, first[0])
    again = await db.claim(1_001, 10, 1_001 + LEASE)
    assert [item.id for item in again] == [items[2].id]  # the oldest parked item, and only one
    await complete(db, first[1])
    await complete(db, again[0])
    rest = await db.claim(1_002, 10, 1_002 + LEASE)
    assert [item.id for item in rest] == [items[3].id, items[4].id]


async def test_a_busy_key_does_not_hold_back_other_keys_or_unlimited_functions(db: store.Store) -> None:
    busy = await start_runs(db, 50, "fn-busy", limit=1, at=100)
    other = await start_runs(db, 2, "fn-other", limit=5, at=200)
    plain = await plain_items(db, 2, at=300)

    claimed: list[records.QueueItem] = []
    for _ in range(10):  # a claim may return early once it has work (slots.PARKING_BUDGET_S)
        batch = await db.claim(1_000, 4, 1_000 + LEASE)
        if not batch:
            break
        claimed.extend(batch)

    # The busy key's 49 waiting items are parked out of the way; everything else, in ready order.
    assert [item.id for item in claimed] == [busy[0].id, other[0].id, other[1].id, plain[0].id, plain[1].id]
    assert await db.count_queue() == 54


async def test_a_dead_workers_slot_comes_back_when_its_lease_expires(db: store.Store) -> None:
    items = await start_runs(db, 3, "fn-a", limit=1)
    [held] = await db.claim(1_000, 10, 1_000 + LEASE)
    assert await db.claim(1_000 + LEASE - 1, 10, 2_000 + LEASE) == []

    # The holder never comes back: after its lease the item is claimed again, still alone.
    [again] = await db.claim(1_000 + LEASE, 10, 1_000 + 2 * LEASE)
    assert again.id == held.id == items[0].id
    assert again.claims == held.claims + 1
    await complete(db, again)
    [next_item] = await db.claim(1_000 + LEASE + 1, 10, 1_000 + 2 * LEASE)
    assert next_item.id == items[1].id


async def test_rescheduling_releases_the_slot_and_renewing_keeps_it(db: store.Store) -> None:
    items = await start_runs(db, 3, "fn-a", limit=1)
    [held] = await db.claim(1_000, 10, 1_000 + LEASE)

    async with db.transaction() as tx:  # a checkpoint: the call goes on
        held.available_at = 1_500 + LEASE
        assert await tx.renew_item(held, held.claims)
    held.claims += 1
    assert await db.claim(1_600, 10, 1_600 + LEASE) == []

    async with db.transaction() as tx:  # a retry in a minute: the slot is free meanwhile
        held.available_at = 61_000
        assert await tx.reschedule_item(held, held.claims)
    [second] = await db.claim(1_700, 10, 1_700 + LEASE)
    assert second.id == items[1].id


async def test_cancelling_a_run_frees_its_slot(db: store.Store) -> None:
    items = await start_runs(db, 3, "fn-a", limit=1)
    [held] = await db.claim(1_000, 10, 1_000 + LEASE)

    async with db.transaction() as tx:
        assert await tx.delete_run_items(held.run_id) == 1
    [second] = await db.claim(1_001, 10, 1_001 + LEASE)
    assert second.id == items[1].id


async def test_items_under_two_keys_need_room_in_both(db: store.Store) -> None:
    # Function-wide limit 2; per user limit 1. Users: a, a, b, c.
    a1 = await start_runs(db, 2, "fn", limit=2, at=100, second=("fn/user-a", 1))
    b = await start_runs(db, 1, "fn", limit=2, at=200, second=("fn/user-b", 1))
    c = await start_runs(db, 1, "fn", limit=2, at=300, second=("fn/user-c", 1))

    claimed = await db.claim(1_000, 10, 1_000 + LEASE)
    assert [item.id for item in claimed] == [a1[0].id, b[0].id]  # a's second waits for a; c for fn

    await complete(db, claimed[0])
    # Freeing a's slot frees a function slot too: the oldest parked item of either key gets it.
    [third] = await db.claim(1_001, 10, 1_001 + LEASE)
    assert third.id == a1[1].id
    await complete(db, claimed[1])
    [fourth] = await db.claim(1_002, 10, 1_002 + LEASE)
    assert fourth.id == c[0].id


async def test_timers_of_a_limited_run_need_no_slot(db: store.Store) -> None:
    [held] = await start_runs(db, 1, "fn-a", limit=1)
    await db.claim(1_000, 10, 1_000 + LEASE)
    wake = make_item(500, run_id=held.run_id, kind=records.ItemKind.WAKE, step_id="s")
    async with db.transaction() as tx:
        await tx.enqueue(wake)

    assert [item.id for item in await db.claim(1_000, 10, 1_000 + LEASE)] == [wake.id]


async def test_concurrent_claims_never_exceed_the_limit(db: store.Store) -> None:
    await start_runs(db, 40, "fn-a", limit=3)

    batches = await asyncio.gather(*(db.claim(1_000, 2, 1_000 + LEASE) for _ in range(8)))

    assert sum(len(batch) for batch in batches) == 3


async def test_throttle_state_advances_once_per_start_per_key(db: store.Store) -> None:
    async with db.transaction() as tx:
        first = await tx.advance_throttle("fn", 1_000, 500)
        second = await tx.advance_throttle("fn", 1_000, 500)
        other = await tx.advance_throttle("fn/other", 1_000, 500)
        later = await tx.advance_throttle("fn", 10_000, 500)

    assert (first, second, other, later) == (1_500, 2_000, 1_500, 10_500)


async def test_a_freed_slot_is_not_lost_to_an_item_blocked_by_its_other_key(db: store.Store) -> None:
    # Function-wide limit 2, per user 1. a1 and c1 run; a2 and b1 wait for the function's slots.
    [a1] = await start_runs(db, 1, "fn", limit=2, at=100, second=("fn/user-a", 1))
    [c1] = await start_runs(db, 1, "fn", limit=2, at=101, second=("fn/user-c", 1))
    [a2] = await start_runs(db, 1, "fn", limit=2, at=102, second=("fn/user-a", 1))
    [b1] = await start_runs(db, 1, "fn", limit=2, at=103, second=("fn/user-b", 1))
    running = await db.claim(1_000, 10, 1_000 + LEASE)
    assert [item.id for item in running] == [a1.id, c1.id]

    await complete(db, running[1])

    # The freed function slot goes first to a2 (the oldest waiting), which still has to wait for
    # user a; the slot then passes on to b1 instead of staying idle until a1 ends.
    assert [item.id for item in await db.claim(1_001, 10, 1_001 + LEASE)] == [b1.id]
    await complete(db, running[0])
    assert [item.id for item in await db.claim(1_002, 10, 1_002 + LEASE)] == [a2.id]
