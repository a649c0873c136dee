"""``stepline send`` and the commands taking an id: --data, --id, the event key and the ids are
checked before anything is sent (exit status 2)."""

from __future__ import annotations

import pytest

from tests.cli import support

UNREACHABLE = "http://127.0.0.1:9"
"""Nothing listens there: a test that got past the checks would fail with status 1, not 2."""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("NaN", "--data is not valid JSON: NaN is not a JSON value"),
        ("Infinity", "--data is not valid JSON: Infinity is not a JSON value"),
        ('{"x": -Infinity}', "--data is not valid JSON: -Infinity is not a JSON value"),
        ("1e999", "--data is not valid JSON: 1e999 is too large for a JSON number"),
        ('{"x": [1e999]}', "--data is not valid JSON: 1e999 is too large for a JSON number"),
        ("{", "--data is not valid JSON: Expecting property name enclosed in double quotes"),
        ("[" * 100_000, "--data is not valid JSON: maximum recursion depth exceeded"),
        ("[1]", "--data must be a JSON object such as '{\"user_id\": 42}' (got a JSON array)"),
        ('"text"', "--data must be a JSON object such as '{\"user_id\": 42}' (got a JSON string)"),
        ("3", "--data must be a JSON object such as '{\"user_id\": 42}' (got a JSON value)"),
        ("null", "--data must be a JSON object such as '{\"user_id\": 42}' (got a JSON value)"),
    ],
)
def test_bad_data_is_refused_locally(data: str, reason: str) -> None:
    line = support.one_line_error(support.run("send", "shop/x", "--data", data, "--url", UNREACHABLE), 2)

    assert line.startswith(f"Error: {reason}"), line


@pytest.mark.parametrize("event_id", ["", "  "])
def test_an_empty_id_is_refused(event_id: str) -> None:
    line = support.one_line_error(support.run("send", "shop/x", "--id", event_id, "--url", UNREACHABLE), 2)

    assert line == "Error: --id must not be empty: leave it out to let the server choose the event's id"


def test_good_input_gets_as_far_as_the_server() -> None:
    line = support.one_line_error(support.run("send", "shop/x", "--data", '{"n": 1.5}', "--url", UNREACHABLE), 1)

    assert line.startswith(f"Error: cannot reach the Stepline server at {UNREACHABLE}/e/NO_EVENT_KEY_SET")


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["runs", "show", ""], "RUN_ID"),
        (["runs", "cancel", " "], "RUN_ID"),
        (["runs", "retry", ""], "RUN_ID"),
        (["events", "show", ""], "EVENT_ID"),
        (["tasks", "show", ""], "TASK_ID"),
        (["tasks", "cancel", ""], "TASK_ID"),
        (["send", "shop/x", "--event-key", ""], "--event-key"),
    ],
)
def test_an_empty_id_argument_is_refused(args: list[str], name: str) -> None:
    # '' would name the list's route instead (a redirect, or the wrong action).
    line = support.one_line_error(support.run(*args, "--url", UNREACHABLE), 2)

    assert line == f"Error: {name} must not be empty"
