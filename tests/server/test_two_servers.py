"""Two servers on one database: work accepted by the server that has not reloaded the functions
yet still starts the runs that a sync through the other one asked for.

Each server re-reads the synced functions every 2 s. In between, its copy may be older than the
table: a task plan carries the fingerprint of the copy it was planned from, and sent events are
inserted together with a read of the table's fingerprint, so a server with an old copy reads the
functions again at once instead of starting no run at all.
"""

from __future__ import annotations

from stepline.server import settings as settings_
from stepline.storage import store
from tests.engine.test_tasks_direct import function_record
from tests.server import support
from tests.server.test_tasks_api import post_task, task_body


async def sync_through_another_server(db: store.Store) -> None:
    """What a sync through another server leaves in the database."""
    async with db.transaction() as tx:
        await tx.upsert_function(function_record("tailor", event_name="shop/tailor"))


async def test_a_task_sent_to_a_server_with_an_old_copy_of_the_functions_starts_the_run(database_url: str) -> None:
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    async with support.serve(settings) as first, support.serve(settings) as second:
        assert second.runtime.registry.functions == {}
        await sync_through_another_server(first.runtime.store)

        reply = await post_task(second, task_body())
        runs = await second.runtime.store.list_runs(limit=10)

    assert reply.status_code == 202, reply.text
    assert reply.json()["run_id"] is not None
    assert [run.function_id for run in runs] == ["tailor"]
    assert set(second.runtime.registry.functions) == {"tailor"}


async def test_an_event_sent_to_a_server_with_an_old_copy_of_the_functions_starts_the_run(database_url: str) -> None:
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    async with support.serve(settings) as first, support.serve(settings) as second:
        assert second.runtime.registry.functions == {}
        await sync_through_another_server(first.runtime.store)

        reply = await second.client.post("/e/dev-key", json=[{"name": "shop/tailor"}, {"name": "shop/other"}])
        runs = await second.runtime.store.list_runs(limit=10)
        events = await second.runtime.store.list_events(limit=10)

    assert reply.status_code == 200, reply.text
    assert len(reply.json()["ids"]) == 2
    assert [run.function_id for run in runs] == ["tailor"]
    assert sorted(event.name for event in events) == ["shop/other", "shop/tailor"]  # each stored once
    assert set(second.runtime.registry.functions) == {"tailor"}
