"""SIGKILL the real server and the real app mid-run: every run completes, no recorded step runs again.

The app is the Inngest-SDK app (``tests/e2e/apps/inngest_app.py``), synced by ``stepline dev
-u``; its ``slow`` function runs ``first``, ``slow`` (slow on its first execution only), a
sleep ``nap`` and ``last``, logging every execution to a side SQLite file that survives kills.

A server killed while a call is in flight holds that call's queue item for its lease (30 s,
the server's default) before the restarted server takes it over. The app is killed during
that wait, so one test per backend covers both kills without waiting twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.e2e import harness, steplog

pytestmark = pytest.mark.crash

RUNS = 3
LEASE_S = 30


def counts(log: Path, run_ids: set[str]) -> Counter[tuple[str, str]]:
    return Counter((e.run_id, e.step) for e in steplog.read(log) if e.run_id in run_ids)


def in_flight(log: Path, run_id: str, step: str) -> bool:
    return any(e.run_id == run_id and e.step == step and e.ended is None for e in steplog.read(log))


def assert_completed(api: harness.Api, run_ids: set[str], timeout: float) -> None:
    for run_id in run_ids:
        run = api.wait_for_run(run_id, timeout=timeout)
        assert run["status"] == "completed", run
        assert run["output"] == {"first": "first-done", "slow": "slow-done", "last": "last-done"}
        names = [step["name"] for step in run["steps"]]
        assert sorted(names) == ["first", "last", "nap", "slow"], names


def test_kill_9_the_server_then_the_app_mid_run(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.db"
    server = harness.ServerProcess(database_url, tmp_path / "server.log")
    app = harness.AppProcess(
        "tests.e2e.apps.inngest_app:app",
        tmp_path / "app.log",
        harness.inngest_env(server, log),
        serve_path="/api/inngest",
    )
    server.command += ["-u", app.url]  # the dev server syncs the app at start, and again every 5 s
    app.spawn()
    server.spawn()
    with harness.running(app, server):
        app.wait_ready()
        server.wait_healthy()
        api = server.api()
        api.wait_synced(["e2e-inngest-slow"])

        # 1. The server dies while the app executes a step, and while other runs sleep.
        mid_step = {api.start("e2e/slow", {"seconds": 4, "nap": 0.5}) for _ in range(RUNS)}
        sleeping = {api.start("e2e/slow", {"seconds": 0, "nap": 4}) for _ in range(RUNS)}
        harness.wait_for(lambda: all(in_flight(log, run_id, "slow") for run_id in mid_step), 20, "the slow steps")

        def asleep() -> bool:
            return all({"first", "slow"} <= {s["name"] for s in api.get_run(run_id)["steps"]} for run_id in sleeping)

        harness.wait_for(asleep, 20, "the sleeping runs to record their steps")
        server.kill()
        api.close()
        server.start()  # same port, same database
        api = server.api()

        # 2. While the dead server's leases run out, the app dies in the middle of a step.
        app_killed = {api.start("e2e/slow", {"seconds": 60, "nap": 0.2}) for _ in range(RUNS)}
        harness.wait_for(lambda: all(in_flight(log, run_id, "slow") for run_id in app_killed), 20, "the slow steps")
        app.kill()
        app.start()  # same port: the server retries the calls it lost

        assert_completed(api, app_killed, timeout=30)
        assert_completed(api, mid_step | sleeping, timeout=LEASE_S + 30)
        api.close()

    executed = counts(log, mid_step | sleeping | app_killed)
    for run_id in sleeping:
        assert [executed[(run_id, step)] for step in ("first", "slow", "last")] == [1, 1, 1], executed
    for run_id in mid_step:
        assert executed[(run_id, "first")] == 1, "recorded before the server died: must not run again"
        assert executed[(run_id, "slow")] == 2, "in flight when the server died, never recorded: runs again, once"
        assert executed[(run_id, "last")] == 1
    for run_id in app_killed:
        assert executed[(run_id, "first")] == 1
        assert executed[(run_id, "slow")] == 2, "killed with the app, then retried once the app was back"
        assert executed[(run_id, "last")] == 1
    unfinished = {e.run_id for e in steplog.read(log) if e.step == "slow" and e.ended is None}
    assert app_killed <= unfinished, "the app died inside the first execution of each slow step"
