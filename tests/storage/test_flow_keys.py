"""The storage verbs of ingest-time flow control: ``lock_flow_key``, ``update_flow_key`` and
``set_run_events``, on each backend; and that a locked key holds off a second store."""

from __future__ import annotations

import asyncio

import pytest

from stepline.storage import records, store
from tests.storage.test_store import make_run


async def test_a_flow_key_starts_empty_and_keeps_what_is_written(db: store.Store) -> None:
    async with db.transaction() as tx:
        row = await tx.lock_flow_key("app-fn", "debounce", "doc-1")
        assert row == records.FlowKeyRecord("app-fn", "debounce", "doc-1")
        row.run_id, row.item_id, row.size, row.opened_at, row.due_at = "run-1", "item-1", 2, 1_000, 11_000
        await tx.update_flow_key(row)
    async with db.transaction() as tx:
        again = await tx.lock_flow_key("app-fn", "debounce", "doc-1")
        other_kind = await tx.lock_flow_key("app-fn", "batch", "doc-1")
        other_key = await tx.lock_flow_key("app-fn", "debounce", "doc-2")

    assert again == records.FlowKeyRecord("app-fn", "debounce", "doc-1", "run-1", "item-1", 2, 1_000, 11_000)
    assert other_kind == records.FlowKeyRecord("app-fn", "batch", "doc-1")
    assert other_key == records.FlowKeyRecord("app-fn", "debounce", "doc-2")


async def test_a_flow_key_written_in_a_rolled_back_transaction_is_not_kept(db: store.Store) -> None:
    async def write_then_fail() -> None:
        async with db.transaction() as tx:
            row = await tx.lock_flow_key("app-fn", "rate_limit", "")
            row.due_at = 5_000
            await tx.update_flow_key(row)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await write_then_fail()
    async with db.transaction() as tx:
        assert (await tx.lock_flow_key("app-fn", "rate_limit", "")).due_at == 0


async def test_set_run_events_replaces_a_runs_events(db: store.Store) -> None:
    run = make_run()
    async with db.transaction() as tx:
        await tx.insert_run(run)
    grown = [*run.events, {"id": "ev-2", "name": "app/user.created", "data": {"n": 2}, "ts": 2, "user": {}}]
    async with db.transaction() as tx:
        await tx.set_run_events(run.id, grown)
    stored = await db.get_run(run.id)
    assert stored is not None
    assert stored.events == grown


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_locked_flow_key_waits_for_the_holder_to_commit(db: store.Store, second_store: store.Store) -> None:
    holder_locked = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as tx:
            row = await tx.lock_flow_key("app-fn", "singleton", "k")
            holder_locked.set()
            await release.wait()
            row.run_id = "run-first"
            await tx.update_flow_key(row)

    async def second() -> str | None:
        await holder_locked.wait()
        async with second_store.transaction() as tx:
            return (await tx.lock_flow_key("app-fn", "singleton", "k")).run_id

    holding = asyncio.create_task(holder())
    waiting = asyncio.create_task(second())
    await holder_locked.wait()
    done, _ = await asyncio.wait([waiting], timeout=0.3)
    assert not done, "the second store must wait while the key is locked"
    release.set()
    await holding
    assert await asyncio.wait_for(waiting, 5.0) == "run-first"  # it saw the holder's write
