"""``stepline runs list`` and ``stepline events list|show`` against a real server on a port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from stepline.cli import main as cli
from stepline.protocol import signing
from stepline.server import settings as settings_
from stepline.storage import records
from tests.server import support
from tests.server.support import NOW_MS, Seed


@pytest.fixture
def base_url(database_url: str) -> Iterator[str]:
    with support.serve_on_port(settings_.ServerSettings(dev=True, database_url=database_url)) as url:
        yield url


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_runs_list_prints_one_line_per_run_and_the_next_cursor(base_url: str, database_url: str) -> None:
    failed, completed = records.RunStatus.FAILED, records.RunStatus.COMPLETED
    seeds = [
        Seed(function_id=f"shop-fn{index % 2}", status=failed if index % 3 else completed, at=NOW_MS + index * 1000)
        for index in range(7)
    ]
    runs = support.seed_sync(database_url, seeds)
    newest = support.newest_first(runs)

    first = run("runs", "list", "--limit", "3", "--url", base_url)

    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert [line.split()[0] for line in lines[:3]] == newest[:3]
    assert lines[0].split()[1:] == ["completed", "shop-fn0", "2025-06-15T15:06:46.000Z"]  # the 7th seed
    assert lines[3] == f"next cursor: {newest[2]}"
    rest = run("runs", "list", "--limit", "3", "--cursor", newest[2], "--url", base_url)
    assert [line.split()[0] for line in rest.output.splitlines()[:3]] == newest[3:6]
    last = run("runs", "list", "--limit", "3", "--cursor", newest[5], "--url", base_url)
    assert last.output.splitlines() == [last.output.splitlines()[0], "(last page)"]
    assert last.output.split()[0] == newest[6]

    filtered = run("runs", "list", "--status", "FAILED", "--function", "shop-fn1", "--url", base_url)
    expected = [r.id for r in runs if r.status is failed and r.function_id == "shop-fn1"]
    assert [line.split()[0] for line in filtered.output.splitlines()[:-1]] == sorted(expected, reverse=True)
    none = run("runs", "list", "--function", "shop-none", "--url", base_url)
    assert none.output.splitlines() == ["no runs", "(last page)"]


def test_events_list_and_show(base_url: str, database_url: str) -> None:
    runs = support.seed_sync(
        database_url, [Seed(at=NOW_MS), Seed(at=NOW_MS + 5, public_id="signup/42", event_name="shop/other")]
    )

    listed = run("events", "list", "--url", base_url)
    assert listed.exit_code == 0, listed.output
    lines = [line.split() for line in listed.output.splitlines()]
    assert lines[0] == [runs[1].event_id, "shop/other", "2025-06-15T15:06:40.005Z", "id=signup/42"]
    assert lines[1] == [runs[0].event_id, "shop/signup", "2025-06-15T15:06:40.000Z"]
    assert listed.output.splitlines()[2] == "(last page)"
    named = run("events", "list", "--name", "shop/signup", "--limit", "1", "--url", base_url)
    assert [line.split()[0] for line in named.output.splitlines()] == [
        runs[0].event_id,
        "(last",
    ]

    shown = run("events", "show", "signup/42", "--url", base_url)
    assert shown.exit_code == 0, shown.output
    assert f'"internal_id": "{runs[1].event_id}"' in shown.output
    assert f'"id": "{runs[1].id}"' in shown.output  # the run it started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["runs", "list", "--status", "done"],
            "Error: --status must be one of queued, running, completed, failed, cancelled, skipped (got 'done')",
        ),
        (["runs", "list", "--limit", "0"], "Error: --limit must be from 1 to 500 (got 0)"),
        (["events", "list", "--limit", "501"], "Error: --limit must be from 1 to 500 (got 501)"),
        (["runs", "list", "--cursor", "bogus"], "Error: server answered 400: cursor 'bogus' is not a cursor"),
        (["events", "show", "nope"], "Error: server answered 404: no event 'nope'"),
    ],
)
def test_errors_are_one_line(base_url: str, args: list[str], message: str) -> None:
    result = run(*args, "--url", base_url)

    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(message), result.output


def test_an_unreachable_server_is_a_one_line_error() -> None:
    result = run("runs", "list", "--url", "http://127.0.0.1:9")

    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach the Stepline server at http://127.0.0.1:9/v1/runs?limit=50")
    assert len(result.output.strip().splitlines()) == 1


def test_a_production_server_needs_the_signing_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    key = signing.generate_signing_key()
    database_url = f"sqlite:///{tmp_path_factory.mktemp('prod')}/stepline.db"
    settings = settings_.ServerSettings(
        dev=False, database_url=database_url, signing_key=key, event_keys=(signing.generate_event_key(),)
    )
    with support.serve_on_port(settings) as url:
        refused = run("events", "list", "--url", url)
        assert refused.exit_code == 1
        assert refused.output.startswith("Error: server answered 401: missing or wrong bearer token")
        assert refused.output.rstrip().endswith(
            "(pass the server's signing key with --signing-key or STEPLINE_SIGNING_KEY)"
        )
        allowed = CliRunner().invoke(cli.main, ["events", "list", "--url", url], env={"STEPLINE_SIGNING_KEY": key})
        assert allowed.exit_code == 0, allowed.output
        assert allowed.output.splitlines() == ["no events", "(last page)"]
