"""``--no-execute``: a server that accepts, shows and changes work but runs none of it, in front
of a worker server on the same database that runs it. Real processes, real HTTP, both backends.

The app is the Inngest-SDK app (``tests/e2e/apps/inngest_app.py``), synced through the API-only
server; its ``slow`` function records ``first``, ``slow``, a sleep ``nap`` and ``last``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e import harness

QUIET_S = 3.0
"""How long the API-only server is watched for running anything: three poll intervals."""

SLOW_OUTPUT = {"first": "first-done", "slow": "slow-done", "last": "last-done"}


def api_only_server_with_app(database_url: str, tmp_path: Path) -> tuple[harness.ServerProcess, harness.AppProcess]:
    """An API-only server and the app it syncs, neither started yet."""
    front = harness.ServerProcess(database_url, tmp_path / "api.log", extra_args=["--no-execute"])
    app = harness.AppProcess(
        "tests.e2e.apps.inngest_app:app",
        tmp_path / "app.log",
        harness.inngest_env(front, tmp_path / "steps.db"),
        serve_path="/api/inngest",
    )
    front.command += ["-u", app.url]
    return front, app


@contextlib.contextmanager
def synced_api_only_server(database_url: str, tmp_path: Path) -> Iterator[tuple[harness.ServerProcess, harness.Api]]:
    """An API-only server running, with the app running and synced through it."""
    front, app = api_only_server_with_app(database_url, tmp_path)
    app.spawn()
    front.spawn()
    with harness.running(app, front):
        app.wait_ready()
        front.wait_healthy()
        api = front.api()
        try:
            api.wait_synced(["e2e-inngest-slow"])
            yield front, api
        finally:
            api.close()


def test_an_api_only_server_accepts_runs_that_only_a_worker_server_executes(database_url: str, tmp_path: Path) -> None:
    with synced_api_only_server(database_url, tmp_path) as (front, api):
        health = httpx.get(f"{front.url}/health").json()

        run_id = api.start("e2e/slow", {"seconds": 0, "nap": 0.2})
        time.sleep(QUIET_S)
        untouched = api.get_run(run_id)

        worker = harness.ServerProcess(database_url, tmp_path / "worker.log")
        with harness.running(worker):
            worker.start()
            done = api.wait_for_run(run_id, timeout=30)
            worker_health = httpx.get(f"{worker.url}/health").json()

    assert health == {"status": 200, "message": "OK", "executes": False}
    assert worker_health["executes"] is True
    assert untouched["status"] == "queued", untouched
    assert untouched["steps"] == []
    assert done["status"] == "completed", done
    assert done["output"] == SLOW_OUTPUT
    assert "API only" in front.logs()


def test_a_worker_runs_a_function_synced_through_another_server_at_once(database_url: str, tmp_path: Path) -> None:
    """The worker is up before the app syncs through the API server, and the run starts right
    after the sync: the worker claims it long before its periodic reload of the functions (every
    2 s), so it must read them again itself instead of failing the run for an unknown function."""
    worker = harness.ServerProcess(database_url, tmp_path / "worker.log")
    with harness.running(worker):
        worker.start()
        with synced_api_only_server(database_url, tmp_path) as (_, api):
            run_id = api.start("e2e/slow", {"seconds": 0, "nap": 0})
            done = api.wait_for_run(run_id, timeout=30)

    assert done["status"] == "completed", done
    assert done["output"] == SLOW_OUTPUT
