"""``--no-execute``: a server that accepts, shows and changes work but runs none of it, in front
of a worker server on the same database that runs it. Real processes, real HTTP, both backends.

The app is the Inngest-SDK app (``tests/e2e/apps/inngest_app.py``), synced through the API-only
server; its ``slow`` function records ``first``, ``slow``, a sleep ``nap`` and ``last``.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e import harness

QUIET_S = 3.0
"""How long the API-only server is watched for running anything: three poll intervals."""


def test_an_api_only_server_accepts_runs_that_only_a_worker_server_executes(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.db"
    front = harness.ServerProcess(database_url, tmp_path / "api.log", extra_args=["--no-execute"])
    app = harness.AppProcess(
        "tests.e2e.apps.inngest_app:app",
        tmp_path / "app.log",
        harness.inngest_env(front, log),
        serve_path="/api/inngest",
    )
    front.command += ["-u", app.url]
    app.spawn()
    front.spawn()
    with harness.running(app, front):
        app.wait_ready()
        front.wait_healthy()
        api = front.api()
        api.wait_synced(["e2e-inngest-slow"])
        health = httpx.get(f"{front.url}/health").json()

        run_id = api.start("e2e/slow", {"seconds": 0, "nap": 0.2})
        time.sleep(QUIET_S)
        untouched = api.get_run(run_id)

        worker = harness.ServerProcess(database_url, tmp_path / "worker.log")
        with harness.running(worker):
            worker.start()
            done = api.wait_for_run(run_id, timeout=30)
            worker_health = httpx.get(f"{worker.url}/health").json()
        api.close()

    assert health == {"status": 200, "message": "OK", "executes": False}
    assert worker_health["executes"] is True
    assert untouched["status"] == "queued", untouched
    assert untouched["steps"] == []
    assert done["status"] == "completed", done
    assert done["output"] == {"first": "first-done", "slow": "slow-done", "last": "last-done"}
    assert "API only" in front.logs()
