"""``stepline runs|events|tasks|send`` against a server: what the user typed stays one path
segment, a bad --url is refused before any call, and an answer that is not what a Stepline
server sends (a redirect, HTML, another shape) is one line, never a traceback."""

from __future__ import annotations

import httpx
import pytest

from stepline.storage import records
from tests.cli import support
from tests.cli.support import Answer
from tests.server import support as server_support
from tests.server.support import NOW_MS, Seed


def create_task(base_url: str, kind: str = "tailor") -> str:
    body = {"kind": kind, "owner": "alice", "event": {"name": "shop/tailor", "data": {}}}
    reply = httpx.post(f"{base_url}/v1/tasks", json=body, timeout=10)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["id"]
    return task_id


def task_status(base_url: str, task_id: str) -> str:
    status: str = httpx.get(f"{base_url}/v1/tasks/{task_id}", timeout=10).json()["status"]
    return status


def test_tasks_list_filters_by_kind(base_url: str) -> None:
    tailored, embedded = create_task(base_url), create_task(base_url, kind="embed")

    result = support.run("tasks", "list", "--kind", "embed", "--url", base_url)

    assert result.exit_code == 0, result.output
    assert embedded in result.stdout
    assert tailored not in result.stdout


@pytest.mark.parametrize("command", ["show", "cancel", "rerun", "retry"])
def test_a_run_id_that_is_a_path_reaches_no_other_route(base_url: str, command: str) -> None:
    task_id = create_task(base_url)

    result = support.run("runs", command, f"../tasks/{task_id}", "--url", base_url)

    assert support.one_line_error(result, 1).startswith("Error: server answered 404")
    assert task_status(base_url, task_id) == "pending"


def test_a_task_id_that_is_a_path_reaches_no_other_route(base_url: str, database_url: str) -> None:
    [run] = server_support.seed_sync(database_url, [Seed(status=records.RunStatus.QUEUED, at=NOW_MS)])

    result = support.run("tasks", "cancel", f"../runs/{run.id}", "--url", base_url)

    assert support.one_line_error(result, 1).startswith("Error: server answered 404")
    assert httpx.get(f"{base_url}/v1/runs/{run.id}", timeout=10).json()["data"]["status"] == "queued"


def test_an_event_key_that_is_a_path_reaches_no_other_route(base_url: str, database_url: str) -> None:
    [run] = server_support.seed_sync(database_url, [Seed(status=records.RunStatus.QUEUED, at=NOW_MS)])

    result = support.run("send", "shop/x", "--event-key", f"../v1/runs/{run.id}/cancel", "--url", base_url)

    assert result.exit_code == 1, result.output
    assert httpx.get(f"{base_url}/v1/runs/{run.id}", timeout=10).json()["data"]["status"] == "queued"


def test_ids_with_slashes_still_work_where_the_server_takes_them(base_url: str, database_url: str) -> None:
    runs = server_support.seed_sync(database_url, [Seed(at=NOW_MS, public_id="signup/42")])

    shown = support.run("events", "show", "signup/42", "--url", base_url)

    assert shown.exit_code == 0, shown.output
    assert f'"internal_id": "{runs[0].event_id}"' in shown.stdout


def test_send_prints_the_answer(base_url: str) -> None:
    sent = support.run("send", "shop/signup", "--data", '{"user": 1}', "--id", "signup/1", "--url", base_url)

    assert sent.exit_code == 0, sent.output
    assert '"ids": [' in sent.stdout
    assert support.run("events", "show", "signup/1", "--url", base_url).exit_code == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:abc", "Port could not be cast to integer value as 'abc'"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("127.0.0.1:8288", "it needs http:// or https://"),
        ("ftp://127.0.0.1", "it needs http:// or https://"),
        ("http://", "it has no host"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:8288/?a=1", "it may not have a query or fragment"),
    ],
)
@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "show", "01J"], ["tasks", "list"], ["send", "x"]])
def test_a_bad_url_is_refused_before_any_call(command: list[str], url: str, reason: str) -> None:
    line = support.one_line_error(support.run(*command, "--url", url), 2)

    assert line.startswith(f"Error: --url must be an http(s) address such as http://127.0.0.1:8288 (got {url!r}")
    assert reason in line


def test_the_url_may_come_from_the_environment() -> None:
    result = support.run("events", "list", env={"STEPLINE_BASE_URL": "localhost:8288"})

    assert "(got 'localhost:8288': it needs http:// or https://)" in support.one_line_error(result, 2)


@pytest.mark.parametrize(
    ("command", "answer", "message"),
    [
        (
            ["runs", "list"],
            Answer(307, headers={"Location": "https://example.test/v1/runs"}),
            "server answered 307, a redirect to https://example.test/v1/runs: point --url at the Stepline server",
        ),
        (["runs", "list"], Answer(200, b"<html><body>Welcome</body></html>"), "answered 200 with '<html><body>W"),
        (["runs", "list"], Answer(200), "answered 200 with an empty body, not JSON"),
        (["runs", "list"], Answer.of_json(200, []), "a JSON array instead of an object"),
        (["runs", "list"], Answer.of_json(200, {"data": "runs"}), "'data' is missing or not a JSON array"),
        (["runs", "list"], Answer.of_json(200, {"data": [{"id": 1}]}), "'id' is missing or not a JSON string"),
        (["runs", "list"], Answer.of_json(200, {"data": ["run"]}), "expected an object holding 'id'"),
        (["runs", "list"], Answer.of_json(200, {"data": [], "cursor": 7}), "'cursor' is not a string"),
        (["runs", "show", "r1"], Answer.of_json(200, {}), "'data' is missing or not a JSON object"),
        (["runs", "cancel", "r1"], Answer.of_json(200, {"data": {}}), "'cancelled' is missing or not a JSON boolean"),
        (["runs", "rerun", "r1"], Answer.of_json(200, {"data": {"run_id": None}}), "'run_id' is missing"),
        (["runs", "retry", "r1"], Answer.of_json(200, {"data": []}), "'data' is missing or not a JSON object"),
        (["tasks", "cancel", "t1"], Answer.of_json(200, {"status": 5}), "'status' is missing or not a JSON string"),
        (["tasks", "show", "t1"], Answer.of_json(200, "task"), "a JSON string instead of an object"),
        (
            ["events", "list"],
            Answer.of_json(200, {"data": [{"internal_id": "a", "id": "a", "name": "n", "received_at": "now"}]}),
            "'received_at' is missing or not a JSON integer",
        ),
        (["send", "x"], Answer.of_json(200, [1]), "a JSON array instead of an object"),
        (["runs", "list"], Answer(500, b"Internal Server Error"), "server answered 500: Internal Server Error"),
        (["runs", "list"], Answer(502), "server answered 502: Bad Gateway"),
        (["runs", "show", "r1"], Answer.of_json(404, {"detail": "Not Found"}), "server answered 404: Not Found"),
        (
            ["runs", "list"],
            Answer.of_json(422, {"detail": [{"loc": ["query", "limit"], "msg": "bad"}]}),
            'server answered 422: [{"loc":["query","limit"],"msg":"bad"}]',
        ),
        (["runs", "list"], Answer(503, b"<h1>down</h1>\n" * 100), "server answered 503: <h1>down</h1> <h1>down"),
    ],
)
def test_an_answer_that_is_not_a_stepline_servers_is_one_line(command: list[str], answer: Answer, message: str) -> None:
    with support.fake_server() as fake:
        fake.answer = answer
        line = support.one_line_error(support.run(*command, "--url", support.fake_url(fake)), 1)

    assert message in line
    assert len(line) < 700


def test_an_unexpected_shape_says_where_it_came_from() -> None:
    with support.fake_server() as fake:
        fake.answer = Answer.of_json(200, {"data": [{"id": 1}]})
        url = support.fake_url(fake)
        line = support.one_line_error(support.run("runs", "list", "--url", url), 1)

    assert line == (
        f"Error: unexpected answer from {url}/v1/runs?limit=50: 'id' is missing or not a JSON string; "
        "is --url the address of a Stepline server of this version?"
    )


def test_a_401_says_which_key_to_pass() -> None:
    with support.fake_server() as fake:
        fake.answer = Answer.of_json(401, {"error": "Event key not found", "status": 401})
        url = support.fake_url(fake)
        sent = support.one_line_error(support.run("send", "x", "--url", url), 1)
        fake.answer = Answer.of_json(401, {"error": "missing or wrong bearer token", "status": 401})
        listed = support.one_line_error(support.run("runs", "list", "--url", url), 1)

    assert sent == (
        "Error: server answered 401: Event key not found "
        "(pass one of the server's event keys with --event-key or STEPLINE_EVENT_KEY)"
    )
    assert listed == (
        "Error: server answered 401: missing or wrong bearer token "
        "(pass the server's signing key with --signing-key or STEPLINE_SIGNING_KEY)"
    )


def test_text_that_is_not_utf8_is_refused_in_one_line() -> None:
    assert "is not valid UTF-8" in support.one_line_error(support.run("runs", "show", "bad\udcff"), 2)
    assert "is not valid UTF-8" in support.one_line_error(support.run("events", "list", "--name", "bad\udcff"), 2)
    assert "not valid UTF-8" in support.one_line_error(support.run("send", "bad\udcff"), 2)
