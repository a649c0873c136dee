"""Flow-control options arriving by sync: a bad one is refused (400, naming the function and the
field) and nothing is registered; good ones take effect; skipped runs are listed by status."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import stepline
from stepline.cli import main as cli
from stepline.sdk import flow
from stepline.server import settings as settings_
from tests.server import support

URL = "http://127.0.0.1:9/api/inngest"


def function_config(**options: Any) -> dict[str, Any]:
    return {
        "id": "flowsync-fn",
        "name": "fn",
        "triggers": [{"event": "flow/ev"}],
        "steps": {
            "step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": f"{URL}?fnId=flowsync-fn"}}
        },
        **options,
    }


def payload(config: dict[str, Any]) -> dict[str, Any]:
    return {"appName": "flowsync", "url": URL, "framework": "test", "sdk": "test:v0", "functions": [config]}


BAD_SYNC: dict[str, tuple[dict[str, Any], str]] = {
    "rate limit 0": ({"rateLimit": {"limit": 0, "period": "1h"}}, "rateLimit.limit: must be an integer of at least 1"),
    "rate limit period": (
        {"rateLimit": {"limit": 1, "period": "500ms"}},
        "rateLimit.period: must be at least 1 second",
    ),
    "rate limit key": ({"rateLimit": {"limit": 1, "period": "1h", "key": "event.("}}, "rateLimit.key: expression"),
    "rate limit shape": ({"rateLimit": [1]}, "rateLimit: must be an object"),
    "debounce period": ({"debounce": {"period": "soon"}}, "debounce.period: invalid duration 'soon'"),
    "debounce too long": ({"debounce": {"period": "8d"}}, "debounce.period: must be at most 1w"),
    "debounce timeout": (
        {"debounce": {"period": "10s", "timeout": "0s"}},
        "debounce.timeout: must be at least 1 second",
    ),
    "batch size": (
        {"batchEvents": {"maxSize": 0, "timeout": "5s"}},
        "batchEvents.maxSize: must be an integer of at least 1",
    ),
    "batch timeout": ({"batchEvents": {"maxSize": 5}}, "batchEvents.timeout: must be a time string"),
    "batch if": ({"batchEvents": {"maxSize": 5, "timeout": "5s", "if": "=="}}, "batchEvents.if: expression"),
    "debounce with batch": (
        {"debounce": {"period": "10s"}, "batchEvents": {"maxSize": 5, "timeout": "5s"}},
        "debounce: cannot be combined with batchEvents",
    ),
    "cancel shape": ({"cancel": {"event": "a/b"}}, "cancel: must be a list"),
    "cancel event": ({"cancel": [{"if": "true"}]}, "cancel[0]: needs a non-empty string 'event'"),
    "cancel if": ({"cancel": [{"event": "a/b", "if": "async.("}]}, "cancel[0].if: expression"),
    "cancel timeout": ({"cancel": [{"event": "a/b", "timeout": "2y"}]}, "cancel[0].timeout: invalid duration"),
    "idempotency": ({"idempotency": "event.data.("}, "idempotency: expression"),
    "idempotency type": ({"idempotency": 5}, "idempotency: must be a CEL expression in a string"),
    "timeouts start": ({"timeouts": {"start": "0.5s"}}, "timeouts.start: must be at least 1 second"),
    "timeouts finish": ({"timeouts": {"finish": 30}}, "timeouts.finish: must be a time string"),
    "singleton mode": ({"singleton": {"mode": "queue"}}, "singleton.mode: must be 'skip' or 'cancel'"),
    "singleton key": ({"singleton": {"mode": "skip", "key": "x y"}}, "singleton.key: expression"),
}


@pytest.mark.parametrize("case", sorted(BAD_SYNC))
async def test_a_sync_with_a_bad_option_is_refused(server: support.Server, case: str) -> None:
    options, message = BAD_SYNC[case]
    reply = await server.client.post("/fn/register", json=payload(function_config(**options)))

    body = support.json_of(reply)
    assert reply.status_code == 400, reply.text
    assert body["status"] == 400
    assert "function 'flowsync-fn'" in body["error"]
    assert message in body["error"]
    functions = await server.client.get("/v1/functions")
    assert support.json_of(functions)["data"] == []


async def test_skipped_runs_are_listed_by_status(server: support.Server) -> None:
    synced = await server.client.post(
        "/fn/register", json=payload(function_config(rateLimit={"limit": 1, "period": "1h"}))
    )
    assert synced.status_code == 200, synced.text
    sent = support.json_of(await server.client.post("/e/dev-key", json=[{"name": "flow/ev"}] * 3))

    skipped = support.json_of(await server.client.get("/v1/runs", params={"status": "skipped"}))["data"]
    queued = support.json_of(await server.client.get("/v1/runs", params={"status": "queued"}))["data"]

    assert len(sent["run_ids"]) == 1
    assert [run["id"] for run in queued] == sent["run_ids"]
    assert len(skipped) == 2
    assert {run["status"] for run in skipped} == {"skipped"}
    assert {run["error"]["message"] for run in skipped} == {"rate limit: more than 1 run(s) per 1h"}


def test_the_cli_lists_skipped_runs(database_url: str) -> None:
    with support.serve_on_port(settings_.ServerSettings(dev=True, database_url=database_url)) as base_url:
        httpx.post(f"{base_url}/fn/register", json=payload(function_config(rateLimit={"limit": 1, "period": "1h"})))
        httpx.post(f"{base_url}/e/dev-key", json=[{"name": "flow/ev"}, {"name": "flow/ev"}])
        result = CliRunner().invoke(cli.main, ["runs", "list", "--status", "skipped", "--url", base_url])

    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "flowsync-fn" in line]
    assert len(lines) == 1
    assert lines[0].split()[1:3] == ["skipped", "flowsync-fn"]
    assert lines[0].endswith("  rate limit: more than 1 run(s) per 1h")


async def test_an_embedded_engine_refuses_a_function_with_a_bad_combination(tmp_path: Any) -> None:
    client = stepline.Stepline(app_id="flowsync")

    @client.function(
        id="fn", trigger=stepline.on_event("flow/ev"), debounce=stepline.Debounce(period=timedelta(seconds=5))
    )
    async def fn(ctx: stepline.Context) -> None:
        return None

    # Built around client.function's own check, as a hand-made Function could be.
    both = flow.FlowOptions(
        debounce=stepline.Debounce(period=timedelta(seconds=5)),
        batch_events=stepline.Batch(max_size=2, timeout=timedelta(seconds=5)),
    )
    tampered = dataclasses.replace(fn, flow=both)
    with pytest.raises(stepline.ConfigurationError, match="function 'flowsync-fn': debounce: cannot be combined"):
        stepline.Engine(client, [tampered], database_url=f"sqlite:///{tmp_path}/x.db")


async def test_cancel_timeouts_may_be_iso_times_as_the_typescript_sdk_sends_them(server: support.Server) -> None:
    config = function_config(
        cancel=[
            {"event": "flow/stop", "if": "async.data.id == event.data.id", "timeout": "2999-01-01T00:00:00.000Z"},
            {"event": "flow/stop-old", "timeout": "2000-01-01T00:00:00Z"},
        ]
    )
    synced = await server.client.post("/fn/register", json=payload(config))
    assert synced.status_code == 200, synced.text
    sent = support.json_of(await server.client.post("/e/dev-key", json=[{"name": "flow/ev", "data": {"id": 1}}] * 2))
    first, second = sent["run_ids"]

    await server.client.post("/e/dev-key", json={"name": "flow/stop-old", "data": {}})  # its listener expired in 2000
    await server.client.post("/e/dev-key", json={"name": "flow/stop", "data": {"id": 1}})

    runs = [support.json_of(await server.client.get(f"/v1/runs/{run_id}"))["data"] for run_id in (first, second)]
    assert [run["status"] for run in runs] == ["cancelled", "cancelled"]
    assert {run["error"]["message"].split(" (")[0] for run in runs} == {"cancel_on: event 'flow/stop'"}
