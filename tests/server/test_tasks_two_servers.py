"""Two servers on one PostgreSQL database: a task enqueued on the server that has not reloaded
the functions yet still starts the runs a sync through the other one asked for.

Each server re-reads the synced functions every 2 s; a task plan carries the fingerprint of the
copy it was planned from and the store refuses it once the table changed, so the server reads
them again at once instead of planning from the old copy (which would start no run at all).
"""

from __future__ import annotations

from stepline.server import settings as settings_
from tests.engine.test_tasks_direct import function_record
from tests.server import support
from tests.server.test_tasks_api import post_task, task_body


async def test_a_server_with_an_old_copy_of_the_functions_still_starts_the_run(postgres_url: str) -> None:
    settings = settings_.ServerSettings(dev=True, database_url=postgres_url)
    async with support.serve(settings) as first, support.serve(settings) as second:
        assert second.runtime.registry.functions == {}
        async with first.runtime.store.transaction() as tx:  # an app syncs through the first server
            await tx.upsert_function(function_record("tailor", event_name="shop/tailor"))

        reply = await post_task(second, task_body())
        runs = await second.runtime.store.list_runs(limit=10)

    assert reply.status_code == 202, reply.text
    assert reply.json()["run_id"] is not None
    assert [run.function_id for run in runs] == ["tailor"]
    assert set(second.runtime.registry.functions) == {"tailor"}
