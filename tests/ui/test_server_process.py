"""The dashboard's settings through the real CLI: a ``stepline dev`` process bound beyond loopback,
``--dashboard-token``, and ``stepline runs retry``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from click.testing import CliRunner

from stepline.cli import main as cli
from stepline.server import settings as settings_
from stepline.storage import open_store, records
from tests.e2e import harness
from tests.server import support
from tests.ui.support import APP_CONFIG, seed_failed_run

TOKEN = "dash-" + "t0k3n" * 6


def test_a_server_bound_beyond_loopback_refuses_the_dashboard_and_warns(tmp_path: Path) -> None:
    server = harness.ServerProcess(
        f"sqlite:///{tmp_path}/s.db", tmp_path / "server.log", extra_args=["--host", "0.0.0.0"]
    )
    server.start()
    try:
        page = httpx.get(f"{server.url}/runs", timeout=10)
        assert page.status_code == 403
        assert "--dashboard-token" in page.text
        assert httpx.get(f"{server.url}/v1/runs", timeout=10).status_code == 401
        assert "listening on 0.0.0.0 without --dashboard-token" in server.logs()
    finally:
        server.stop()


def test_a_server_with_a_token_asks_for_it(tmp_path: Path) -> None:
    server = harness.ServerProcess(
        f"sqlite:///{tmp_path}/s.db",
        tmp_path / "server.log",
        extra_args=["--host", "0.0.0.0", "--dashboard-token", TOKEN],
    )
    server.start()
    try:
        page = httpx.get(f"{server.url}/runs", timeout=10)
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/runs"
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{server.url}/runs", headers=bearer, timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/v1/runs", headers=bearer, timeout=10).status_code == 200
        assert "without --dashboard-token" not in server.logs()
    finally:
        server.stop()


def test_a_short_token_stops_the_server_at_once() -> None:
    result = CliRunner().invoke(cli.main, ["dev", "--dashboard-token", "short"])
    assert result.exit_code == 2
    assert "the dashboard token must be at least 16 characters" in result.output


def test_runs_retry(database_url: str) -> None:
    with support.serve_on_port(settings_.ServerSettings(dev=True, database_url=database_url)) as url:
        assert httpx.post(f"{url}/fn/register", json=APP_CONFIG, timeout=10).status_code == 200
        failed = asyncio.run(_seed_failed(database_url))
        runner = CliRunner()

        retried = runner.invoke(cli.main, ["runs", "retry", failed.id, "--url", url])

        assert retried.exit_code == 0, retried.output
        new_id = retried.output.strip()
        steps = httpx.get(f"{url}/v1/runs/{new_id}", timeout=10).json()["data"]["steps"]
        assert [step["name"] for step in steps] == ["fetch", "settle"]
        again = runner.invoke(cli.main, ["runs", "retry", new_id, "--url", url])
        assert again.exit_code == 1
        assert "server answered 409" in again.output


async def _seed_failed(database_url: str) -> records.RunRecord:
    db = await open_store(database_url)
    try:
        return await seed_failed_run(db, "shop-charge")
    finally:
        await db.close()
