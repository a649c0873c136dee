"""RoleReady writing its tasks straight in the server's PostgreSQL database (``STEPLINE_DATABASE_URL``,
``stepline.tasks.connect``), with the real ``stepline dev`` server running them.

The contract is the same as over HTTP (``test_roleready.py``): ``202 {"aiJobId"}``, the task
polled to ``complete`` through the app's own routes, and the server sees the same task. And
since the route no longer needs the server to accept work, a task accepted while the server is
down waits, pending, and runs once the server is back. PostgreSQL only: a SQLite database
belongs to its one server.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx

from tests.e2e import harness
from tests.e2e.test_roleready import accepted_id, bearer, poll, roleready_stack, server_tasks, tailor


def direct_stack(
    database_url: str, directory: Path
) -> contextlib.AbstractContextManager[tuple[harness.ServerProcess, harness.AppProcess, httpx.Client]]:
    """The server and RoleReady writing its tasks straight in the server's database, both running
    and synced, and a client of the app."""
    return roleready_stack(
        database_url,
        directory,
        STEPLINE_DATABASE_URL=database_url,
        ROLEREADY_MODEL_LATENCY_MS="0",
        ROLEREADY_MODEL_FAILURE_RATE="0",
    )


def test_the_route_writes_the_task_itself_and_the_server_runs_it(postgres_url: str, tmp_path: Path) -> None:
    with direct_stack(postgres_url, tmp_path) as (server, app, http):
        # The app may have read the synced functions before the server synced it: its first plan
        # is then refused as stale and made again from the synced ones.
        task_id = accepted_id(tailor(http, "alice", "job-a1"))
        task = poll(http, "alice", task_id)
        listed = [item["id"] for item in server_tasks(server, "alice")]

    assert task["status"] == "complete", task
    assert task["result"]["job_id"] == "job-a1"
    assert task["progress"] == 1.0
    assert listed == [task_id]
    assert "written straight to the Stepline database" in app.log.read_text()


def test_a_task_accepted_while_the_server_is_down_runs_when_it_is_back(postgres_url: str, tmp_path: Path) -> None:
    with direct_stack(postgres_url, tmp_path) as (server, _, http):
        server.stop()

        task_id = accepted_id(tailor(http, "bob", "job-b1"))
        waiting = http.get(f"/api/ai-jobs/{task_id}", headers=bearer("bob")).json()
        server.start()
        task = poll(http, "bob", task_id)

    assert waiting["status"] == "pending", waiting
    assert task["status"] == "complete", task
