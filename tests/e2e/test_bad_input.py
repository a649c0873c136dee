"""Bad input to the real server: the right status, a JSON ``{"error", "status"}`` body, nothing half-written.

Plus how the CLI fails (one line, non-zero, no traceback) and where the server listens.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.conftest import Stack

SINK_APP = "e2e-sink"
SINK_FN = f"{SINK_APP}-sink"
NOWHERE = "http://127.0.0.1:9/api/inngest"  # the discard port: nothing listens there


def sink_config(function_id: str = SINK_FN, event: str = "bad/ok") -> dict[str, Any]:
    return {
        "id": function_id,
        "name": function_id,
        "triggers": [{"event": event}],
        "steps": {
            "step": {
                "id": "step",
                "name": "step",
                "runtime": {"type": "http", "url": f"{NOWHERE}?fnId={function_id}&stepId=step"},
                "retries": {"attempts": 0},
            }
        },
    }


def register(api: harness.Api, functions: list[dict[str, Any]], app_id: str = SINK_APP) -> dict[str, Any]:
    payload = {"appName": app_id, "url": NOWHERE, "framework": "e2e", "sdk": "e2e:v0", "functions": functions}
    reply = api.http.post("/fn/register", json=payload)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


@pytest.fixture(scope="module")
def api(stack: Stack) -> harness.Api:
    """The server's API, with an app whose function ``bad/ok`` events trigger (its calls go nowhere)."""
    stack.ready()
    register(stack.api, [sink_config()])
    stack.api.wait_synced([SINK_FN])
    return stack.api


@pytest.fixture
def unchanged(stack: Stack, api: harness.Api) -> Iterator[None]:
    """The test must leave every table as it found it."""
    before = harness.count_rows(stack.database_url)
    yield
    assert harness.count_rows(stack.database_url) == before, "a rejected request wrote to the database"


def post_raw(api: harness.Api, body: bytes, key: str | None = None) -> Any:
    return api.http.post(f"/e/{key or api.event_key}", content=body, headers={"Content-Type": "application/json"})


# ingest
@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "body",
    [b'{"name": "bad/ok", "data": ', b"not json at all", b"", b'{"name": "bad/ok"} trailing'],
    ids=["truncated", "text", "empty", "trailing"],
)
def test_malformed_json_is_400(api: harness.Api, body: bytes) -> None:
    harness.assert_error_body(post_raw(api, body), 400)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "event",
    [{"data": {}}, {"name": ""}, {"name": "   "}, {"name": 5}, {"name": None}, "bad/ok", ["bad/ok"]],
    ids=["missing", "empty", "blank", "number", "null", "string", "nested-list"],
)
def test_event_without_a_name_is_400(api: harness.Api, event: Any) -> None:
    harness.assert_error_body(api.post_events(event), 400)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("name", ["inngest/function.failed", "inngest/anything", "Inngest/Mixed.Case"])
def test_reserved_inngest_names_are_400(api: harness.Api, name: str) -> None:
    body = harness.assert_error_body(api.post_events({"name": name, "data": {}}), 400)
    assert "inngest/" in body["error"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "event",
    [
        {"name": "bad/ok", "data": []},
        {"name": "bad/ok", "data": "text"},
        {"name": "bad/ok", "ts": "yesterday"},
        {"name": "bad/ok", "user": "alice"},
        {"name": "bad/ok", "user": ["alice"]},
        {"name": "bad/ok", "id": "i" * 513},
        {"name": "bad/" + "n" * 253},
        {"name": "bad/ok", "data": {"text": "nul\x00"}},
    ],
    ids=["data-list", "data-string", "ts-string", "user-string", "user-list", "long-id", "long-name", "nul"],
)
def test_malformed_fields_are_400(api: harness.Api, event: Any) -> None:
    harness.assert_error_body(api.post_events(event), 400)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "bad/ok", "data": {"text": "half a pair \\ud800"}}',
        b'{"name": "bad/\\udfff", "data": {}}',
        b'{"name": "bad/ok", "data": {"n": NaN}}',
        b'{"name": "bad/ok", "data": {"n": 1e999}}',
        b'{"name": "bad/ok", "data": {"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
    ids=["lone-surrogate-in-data", "lone-surrogate-in-name", "nan", "infinite", "nested-100000-deep"],
)
def test_json_no_database_can_store_is_400(api: harness.Api, body: bytes) -> None:
    harness.assert_error_body(post_raw(api, body), 400)
    assert api.http.get("/v1/events").status_code == 200  # and the events list still reads


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "path",
    ["/v1/runs/%00", "/v1/tasks/01HZZZZZZZZZZZZZZZZZZZZZZ%00", "/v1/tasks?owner=al%00ice", "/v1/runs?function_id=%00"],
)
def test_a_nul_in_the_url_is_400(api: harness.Api, path: str) -> None:
    body = harness.assert_error_body(api.http.get(path), 400)
    assert "NUL" in body["error"]


@pytest.mark.usefixtures("unchanged")
def test_empty_batch_is_400(api: harness.Api) -> None:
    harness.assert_error_body(api.post_events([]), 400)


@pytest.mark.usefixtures("unchanged")
def test_oversized_event_is_413(api: harness.Api) -> None:
    body = harness.assert_error_body(api.post_events({"name": "bad/ok", "data": {"blob": "x" * (512 * 1024)}}), 413)
    assert "512 KiB" in body["error"]


@pytest.mark.usefixtures("unchanged")
def test_oversized_batch_is_413_and_starts_nothing(api: harness.Api) -> None:
    batch = [{"name": "bad/ok", "data": {"n": n}} for n in range(5001)]
    body = harness.assert_error_body(api.post_events(batch), 413)
    assert "5000" in body["error"]


@pytest.mark.usefixtures("unchanged")
def test_one_bad_event_rejects_the_whole_batch(api: harness.Api) -> None:
    batch: list[dict[str, Any]] = [{"name": "bad/ok", "data": {"n": n}} for n in range(3)]
    batch.append({"data": {"n": 3}})  # no name
    body = harness.assert_error_body(api.post_events(batch), 400)
    assert "event 3" in body["error"]
    batch[3] = {"name": "bad/ok", "data": {"blob": "x" * (600 * 1024)}}
    harness.assert_error_body(api.post_events(batch), 413)


def test_largest_accepted_event_and_batch(stack: Stack, api: harness.Api) -> None:
    """The limits are limits: just under them is accepted (events that trigger nothing)."""
    before = harness.count_rows(stack.database_url)
    answer = api.send("bad/nothing", {"blob": "x" * (500 * 1024)})
    assert len(answer["ids"]) == 1
    assert answer["run_ids"] == []
    reply = api.post_events([{"name": "bad/nothing", "data": {"n": n}} for n in range(5000)])
    assert reply.status_code == 200, reply.text[:500]
    assert len(reply.json()["ids"]) == 5000
    after = harness.count_rows(stack.database_url)
    assert after["events"] == before["events"] + 5001
    assert after["runs"] == before["runs"]


def test_a_good_batch_is_written_whole(stack: Stack, api: harness.Api) -> None:
    """The control for ``unchanged``: the same events, valid, are stored with their runs."""
    before = harness.count_rows(stack.database_url)
    answer = api.send("bad/ok", {"n": 1})
    assert len(answer["run_ids"]) == 1
    after = harness.count_rows(stack.database_url)
    api.cancel(answer["run_ids"][0])  # its app is unreachable: it would retry for an hour
    assert after["events"] == before["events"] + 1
    assert after["runs"] == before["runs"] + 1


def test_wrong_event_key(stack: Stack, api: harness.Api) -> None:
    before = harness.count_rows(stack.database_url)
    reply = api.post_events({"name": "bad/ok", "data": {}}, key="not-the-key")
    if stack.production:
        body = harness.assert_error_body(reply, 401)
        assert "key" in body["error"].lower()
        assert harness.count_rows(stack.database_url) == before
    else:
        assert reply.status_code == 200, "a dev server without event keys accepts any key"
        for run_id in reply.json()["run_ids"]:
            api.cancel(run_id)


# the API and sync
def test_api_needs_the_signing_key_as_bearer_in_production(stack: Stack, api: harness.Api) -> None:
    if not stack.production:
        pytest.skip("a dev server without a signing key has an open API")
    anonymous = harness.Api(stack.server.url, None, stack.server.event_key)
    wrong = harness.Api(stack.server.url, harness.WRONG_SIGNING_KEY, stack.server.event_key)
    payload = {"appName": "intruder", "url": NOWHERE, "functions": [sink_config("intruder-sink")]}
    try:
        before = harness.count_rows(stack.database_url)
        for client in (anonymous, wrong):
            harness.assert_error_body(client.http.post("/fn/register", json=payload), 401)
            harness.assert_error_body(client.http.post("/v1/apps/sync", json={"url": NOWHERE}), 401)
            harness.assert_error_body(client.http.get("/v1/functions"), 401)
            harness.assert_error_body(client.http.get("/v1/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ"), 401)
        assert harness.count_rows(stack.database_url) == before
        scheme_only = api.http.post("/fn/register", json=payload, headers={"Authorization": "Bearer"})
        harness.assert_error_body(scheme_only, 401)
        basic = api.http.post("/fn/register", json=payload, headers={"Authorization": f"Basic {harness.SIGNING_KEY}"})
        harness.assert_error_body(basic, 401)
    finally:
        anonymous.close()
        wrong.close()


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        json.dumps([1, 2]).encode(),
        json.dumps({"url": NOWHERE, "functions": []}).encode(),
        json.dumps({"appName": "x", "url": "ftp://nowhere", "functions": []}).encode(),
        json.dumps({"appName": "x", "url": NOWHERE, "functions": {}}).encode(),
        json.dumps({"appName": "x", "url": NOWHERE, "functions": [sink_config("x-ok"), {"id": "x-bad"}]}).encode(),
        json.dumps({"appName": "x", "url": NOWHERE, "functions": [{**sink_config("x-bad"), "triggers": []}]}).encode(),
        json.dumps(
            {
                "appName": "x",
                "url": NOWHERE,
                "functions": [{**sink_config("x-bad"), "triggers": [{"cron": "0 0 31 2 *"}]}],
            }
        ).encode(),
        json.dumps({"appName": "x", "url": NOWHERE, "functions": [{**sink_config("x-bad"), "steps": []}]}).encode(),
        json.dumps(
            {
                "appName": "x",
                "url": NOWHERE,
                "functions": [{**sink_config("x-bad"), "steps": {"step": {"runtime": "x"}}}],
            }
        ).encode(),
        json.dumps({"appName": "x", "url": NOWHERE, "functions": [], "extra": float("nan")}).encode(),
        json.dumps({"appName": "x\ud800", "url": NOWHERE, "functions": []}).encode(),
        json.dumps({"appName": "x\x00", "url": NOWHERE, "functions": []}).encode(),
        b'{"appName": "x", "url": "' + NOWHERE.encode() + b'", "functions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=[
        "malformed",
        "list",
        "no-app-name",
        "bad-url",
        "functions-object",
        "one-bad-function",
        "no-triggers",
        "cron-never-fires",
        "steps-list",
        "runtime-string",
        "nan",
        "lone-surrogate",
        "nul",
        "nested-100000-deep",
    ],
)
def test_bad_sync_payload_is_400_and_writes_nothing(api: harness.Api, payload: bytes) -> None:
    reply = api.http.post("/fn/register", content=payload, headers={"Content-Type": "application/json"})
    harness.assert_error_body(reply, 400)


@pytest.mark.usefixtures("unchanged")
def test_oversized_sync_body_is_413(api: harness.Api) -> None:
    body = b'{"appName": "x", "url": "' + NOWHERE.encode() + b'", "functions": [], "pad": "' + b"x" * (17 << 20) + b'"}'
    reply = api.http.post("/fn/register", content=body, headers={"Content-Type": "application/json"})
    assert "16 MiB" in harness.assert_error_body(reply, 413)["error"]


@pytest.mark.usefixtures("unchanged")
def test_sync_of_an_unreachable_app_is_502(api: harness.Api) -> None:
    body = harness.assert_error_body(api.http.post("/v1/apps/sync", json={"url": NOWHERE}), 502)
    assert NOWHERE in body["error"]
    harness.assert_error_body(api.http.post("/v1/apps/sync", json={"url": "not-a-url"}), 400)
    harness.assert_error_body(api.http.post("/v1/apps/sync", json={"url": "http://[::1"}), 400)
    harness.assert_error_body(api.http.post("/v1/apps/sync", json={}), 422)


# requests from other sites' pages
@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
def test_a_post_from_another_sites_page_is_403(api: harness.Api, origin: str) -> None:
    """A page elsewhere cannot make a visitor's browser send events, syncs or cancels to the server."""
    text_plain = {"Origin": origin, "Content-Type": "text/plain"}  # the form a page can post without CORS
    event = json.dumps({"name": "bad/ok", "data": {}})
    sync = json.dumps({"appName": "csrf", "url": NOWHERE, "functions": [sink_config("csrf-fn")]})
    for reply in (
        api.http.post(f"/e/{api.event_key}", content=event, headers=text_plain),
        api.http.post("/fn/register", content=sync, headers=text_plain),
        api.http.post("/v1/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ/cancel", headers={"Origin": origin}),
    ):
        body = harness.assert_error_body(reply, 403)
        assert "Origin" in body["error"]


def test_a_post_from_the_servers_own_origin_goes_through(api: harness.Api) -> None:
    own = str(api.http.base_url).rstrip("/")
    reply = api.http.post(f"/e/{api.event_key}", json={"name": "bad/same-origin"}, headers={"Origin": own})
    assert reply.status_code == 200, reply.text


# unknown things
@pytest.mark.usefixtures("unchanged")
def test_unknown_run_is_404(api: harness.Api) -> None:
    unknown = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    for reply in (
        api.http.get(f"/v1/runs/{unknown}"),
        api.http.post(f"/v1/runs/{unknown}/cancel"),
        api.http.post(f"/v1/runs/{unknown}/rerun"),
    ):
        body = harness.assert_error_body(reply, 404)
        assert unknown in body["error"]


@pytest.mark.usefixtures("unchanged")
def test_unknown_route_is_404_json(api: harness.Api) -> None:
    harness.assert_error_body(api.http.get("/v1/nothing-here"), 404)
    harness.assert_error_body(api.http.delete("/e/some-key"), 405)


def test_rerun_of_a_function_no_longer_synced_is_404(stack: Stack, api: harness.Api) -> None:
    register(api, [sink_config("e2e-gone-fn", event="bad/gone")], app_id="e2e-gone")
    api.wait_synced(["e2e-gone-fn"])
    run_id = api.start("bad/gone", {})
    api.cancel(run_id)
    register(api, [], app_id="e2e-gone")  # the app drops its function
    harness.wait_for(lambda: "e2e-gone-fn" not in {fn["id"] for fn in api.functions()}, 10, "the function removed")
    before = harness.count_rows(stack.database_url)
    body = harness.assert_error_body(api.http.post(f"/v1/runs/{run_id}/rerun"), 404)
    assert "e2e-gone-fn" in body["error"]
    after = harness.count_rows(stack.database_url)
    assert (after["events"], after["runs"]) == (before["events"], before["runs"])


# where the server listens
def test_listens_on_loopback_only_by_default(stack: Stack, api: harness.Api) -> None:
    address = harness.non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    assert harness.connects("127.0.0.1", stack.server.port)
    assert not harness.connects(address, stack.server.port), f"the server answers on {address}"


def test_host_flag_chooses_the_interface(tmp_path: Path) -> None:
    address = harness.non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = harness.ServerProcess(
        f"sqlite:///{tmp_path}/s.db", tmp_path / "server.log", extra_args=["--host", address]
    )

    def listening() -> bool:
        server.check_alive()
        return harness.connects(address, server.port)

    server.spawn()
    with harness.running(server):
        harness.wait_for(listening, 20, f"the server on {address}")
        assert not harness.connects("127.0.0.1", server.port)


# the CLI's failures
def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("STEPLINE_", "INNGEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "stepline.cli", *args],
        cwd=harness.ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def test_start_without_keys_fails_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    port = str(harness.free_port())
    assert_one_line_failure(run_cli("start", "--port", port, "--database-url", url), "signing key")
    assert_one_line_failure(
        run_cli("start", "--port", port, "--database-url", url, "--signing-key", harness.SIGNING_KEY), "event key"
    )
    assert_one_line_failure(
        run_cli(
            "start", "--port", port, "--database-url", url, "--signing-key", "not-hex", "--event-key", harness.EVENT_KEY
        ),
        "signing key",
    )
    # Keys from the environment count too.
    env = {"STEPLINE_DATABASE_URL": url, "STEPLINE_SIGNING_KEY": harness.SIGNING_KEY}
    assert_one_line_failure(run_cli("start", "--port", port, env=env), "event key")
    assert not (tmp_path / "s.db").exists(), "nothing is created before the configuration is checked"


def test_start_without_a_database_fails_without_a_traceback() -> None:
    result = run_cli("start", "--signing-key", harness.SIGNING_KEY, "--event-key", harness.EVENT_KEY)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "--database-url" in result.stderr


@pytest.mark.parametrize("command", ["dev", "start"])
def test_unreachable_database_fails_in_one_line(command: str) -> None:
    port = str(harness.free_port())
    keys = ["--signing-key", harness.SIGNING_KEY, "--event-key", harness.EVENT_KEY] if command == "start" else []
    dead = f"postgresql://postgres@127.0.0.1:{harness.free_port()}/nothing?connect_timeout=3"
    line = assert_one_line_failure(run_cli(command, "--port", port, "--database-url", dead, *keys))
    assert line.startswith("Error:"), line
    assert not harness.connects("127.0.0.1", int(port)), "the server must not be listening"


def test_sqlite_path_that_is_a_directory_fails_in_one_line(tmp_path: Path) -> None:
    result = run_cli("dev", "--port", str(harness.free_port()), "--database-url", f"sqlite:///{tmp_path}")
    assert_one_line_failure(result, "sqlite")


def test_sqlite_path_under_a_file_fails_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    result = run_cli("dev", "--port", str(harness.free_port()), "--database-url", f"sqlite:///{blocker}/x/s.db")
    assert_one_line_failure(result, str(blocker))


def test_bad_database_url_fails_in_one_line() -> None:
    result = run_cli("dev", "--port", str(harness.free_port()), "--database-url", "mysql://nope")
    assert_one_line_failure(result, "database url")


def test_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("dev", "--port", str(port), "--database-url", f"sqlite:///{tmp_path}/s.db")
    assert_one_line_failure(result, str(port))


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("flow", "named"),
    [
        ({"concurrency": [{"limit": 0}]}, "concurrency limit"),
        ({"concurrency": [{"limit": 1}, {"limit": 1, "key": "event.data.a"}, {"limit": 2}]}, "at most 2"),
        ({"concurrency": [{"limit": 1, "key": "event.data.("}]}, "concurrency key"),
        ({"throttle": {"limit": 1, "period": "500ms"}}, "throttle period"),
        ({"priority": {"run": "601"}}, "priority run"),
    ],
    ids=["concurrency-0", "three-constraints", "key-does-not-compile", "short-period", "priority-out-of-range"],
)
def test_bad_flow_control_is_refused_at_sync_naming_the_option(
    api: harness.Api, flow: dict[str, Any], named: str
) -> None:
    payload = {"appName": "x", "url": NOWHERE, "functions": [{**sink_config("x-flow"), **flow}]}
    body = harness.assert_error_body(api.http.post("/fn/register", json=payload), 400)
    assert named in body["error"]
    assert "x-flow" in body["error"]
