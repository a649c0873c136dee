"""An app written with the PyPI ``inngest`` package (0.5.19) runs unchanged on Stepline.

The real server (``stepline dev``, and ``stepline start`` with keys) runs as a subprocess on
SQLite and on PostgreSQL; the app (``tests/e2e/apps/inngest_app.py``) runs on uvicorn. One
server and one app are shared by the tests of each backend and mode.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e import harness, steplog
from tests.e2e.conftest import Stack, inngest_app_process

APP_ID = "e2e-inngest"
FUNCTIONS = [
    "steps",
    "steps-sync",
    "parallel",
    "sleeper",
    "waiter",
    "child",
    "invoker",
    "sender",
    "receiver",
    "failing",
    "non-retriable",
    "retry-after",
    "flaky",
    "long-sleep",
    "slow",
    "rate-limited",
    "idempotent",
    "debounced",
    "batched",
    "singleton",
    "cancellable",
    "time-boxed",
    "limited",
    "throttled",
    "prioritized",
]


def token() -> str:
    return uuid.uuid4().hex[:12]


def executions(stack: Stack, run_id: str, step: str | None = None) -> list[steplog.Execution]:
    return [e for e in steplog.read(stack.step_log) if e.run_id == run_id and (step is None or e.step == step)]


def run_started_with_token(stack: Stack, fn: str, tok: str, timeout: float = 20) -> str:
    """The id of the run of ``fn`` that logged ``tok`` (a run that a function started itself)."""

    def found() -> str | None:
        return next((e.run_id for e in steplog.read(stack.step_log) if e.fn == fn and e.token == tok), None)

    return harness.wait_for(found, timeout, f"a run of {fn} with token {tok}")


def summary(run: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(step["name"], step["kind"], step["attempts"]) for step in run["steps"]]


@pytest.fixture
def api(stack: Stack, inngest_app: harness.AppProcess) -> harness.Api:
    return stack.api


@dataclasses.dataclass(frozen=True)
class Started:
    run_id: str
    token: str


SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "steps": ("e2e/steps", {"n": 20}),
    "steps-sync": ("e2e/steps-sync", {"n": 20}),
    "parallel": ("e2e/parallel", {}),
    "sleep": ("e2e/sleep", {"seconds": 1}),
    "wait-timeout": ("e2e/wait", {"timeout": 1}),
    "invoke": ("e2e/invoke", {"x": 7}),
    "invoke-failing": ("e2e/invoke", {"x": 1, "fail": True}),
    "send": ("e2e/send", {}),
    "on-failure": ("e2e/fail", {}),
    "non-retriable": ("e2e/non-retriable", {}),
    "retry-after": ("e2e/retry-after", {"delay": 3}),
    "flaky": ("e2e/flaky", {"failures": 2}),
    "too-flaky": ("e2e/flaky", {"failures": 10}),
}


@pytest.fixture(scope="module")
def started(stack: Stack, inngest_app: harness.AppProcess) -> dict[str, Started]:
    """Every scenario's run, started at once so that their sleeps and retry delays overlap."""
    runs: dict[str, Started] = {}
    for scenario, (name, data) in SCENARIOS.items():
        tok = token()
        runs[scenario] = Started(stack.api.start(name, {**data, "token": tok}), tok)
    return runs


Runs = Callable[[str], tuple[dict[str, Any], str]]


@pytest.fixture
def runs(stack: Stack, started: dict[str, Started]) -> Runs:
    """The ended run of a scenario, with its token."""

    def ended(scenario: str) -> tuple[dict[str, Any], str]:
        begun = started[scenario]
        return stack.api.wait_for_run(begun.run_id), begun.token

    return ended


# sync
def test_sync_registers_every_function(stack: Stack, api: harness.Api) -> None:
    ids = {fn["id"] for fn in api.functions()}
    assert {f"{APP_ID}-{name}" for name in FUNCTIONS} <= ids
    assert f"{APP_ID}-failing-failure" in ids, "on_failure is registered as its own function"
    apps = api.http.get("/v1/apps").json()["data"]
    app = next(app for app in apps if app["id"] == APP_ID)
    assert app["url"].startswith("http://127.0.0.1:")
    assert "0.5.19" in (app["sdk"] or ""), app


def test_sync_again_changes_nothing(stack: Stack, inngest_app: harness.AppProcess, api: harness.Api) -> None:
    before = {fn["id"]: fn for fn in api.functions()}
    api.sync(inngest_app.url)
    assert {fn["id"]: fn for fn in api.functions()} == before


# step.wait_for_event, cancellation and a wrong signing key: fixtures do the slow parts while
# the scenarios' runs go on, and the tests check what they saw.
@dataclasses.dataclass(frozen=True)
class WaitCase:
    run_id: str
    key: str
    unmatched_answer: dict[str, Any]
    status_after_unmatched: str
    paused_after_unmatched: bool


@pytest.fixture(scope="module")
def wait_case(stack: Stack, started: dict[str, Started]) -> WaitCase:
    """A wait_for_event run: sent a non-matching event (then checked), then a matching one."""
    api = stack.api
    key = token()
    run_id = api.start("e2e/wait", {"key": key, "timeout": 30})
    harness.wait_for(lambda: run_id in harness.waiting_runs(stack.database_url, "e2e/approve"), 15, "the wait")
    unmatched = api.send("e2e/approve", {"key": "someone-else", "by": "mallory"})
    time.sleep(1)
    status = api.get_run(run_id)["status"]
    paused = run_id in harness.waiting_runs(stack.database_url, "e2e/approve")
    api.send("e2e/approve", {"key": key, "by": "alice"})
    return WaitCase(run_id, key, unmatched, status, paused)


@dataclasses.dataclass(frozen=True)
class CancelCase:
    sleeping: str
    mid_step: str
    first_answer: dict[str, Any]
    second_answer: dict[str, Any]
    mid_step_answer: dict[str, Any]


@pytest.fixture(scope="module")
def cancel_case(stack: Stack, started: dict[str, Started]) -> CancelCase:
    """A sleeping run and a run inside a slow step, both cancelled."""
    api = stack.api
    sleeping = api.start("e2e/long-sleep", {})
    mid_step = api.start("e2e/slow", {"seconds": 1.5, "nap": 0.2})
    harness.wait_for(lambda: any(s["name"] == "start" for s in api.get_run(sleeping)["steps"]), 15, "the first step")
    harness.wait_for(lambda: executions(stack, mid_step, "slow"), 15, "the slow step to start")
    mid_step_answer = api.cancel(mid_step)
    first, second = api.cancel(sleeping), api.cancel(sleeping)
    harness.wait_for(lambda: all(e.ended for e in executions(stack, mid_step, "slow")), 15, "the slow step to end")
    time.sleep(1)  # ample for the nap and the last step, had the run gone on
    return CancelCase(sleeping, mid_step, first, second, mid_step_answer)


@dataclasses.dataclass(frozen=True)
class WrongKeyCase:
    sync_reply: httpx.Response
    synced_functions: list[str]
    run: dict[str, Any]
    """The run as last seen, after a bounded wait for it to end."""
    executed: list[steplog.Execution]


@pytest.fixture(scope="module")
def wrong_key_case(stack: Stack, started: dict[str, Started]) -> WrongKeyCase:
    """An app with a wrong signing key: asked to sync, then registered anyway, then a run of its functions."""
    if not stack.production:
        pytest.skip("signing keys are checked in production mode")
    bad = inngest_app_process(
        stack, app_id="e2e-wrong-key", prefix="wrongkey", signing_key=harness.WRONG_SIGNING_KEY
    ).start()
    try:
        sync_reply = stack.api.http.post("/v1/apps/sync", json={"url": bad.url})
        synced = [fn["id"] for fn in stack.api.functions() if fn["id"].startswith("e2e-wrong-key-")]
        harness.register_with_key(stack.api, bad.url, harness.WRONG_SIGNING_KEY)
        tok = token()
        run_id = stack.api.start("wrongkey/fail", {"token": tok})  # retries=1
        try:
            run = stack.api.wait_for_run(run_id, timeout=4)  # two attempts would take about 1 s
        except AssertionError:
            run = stack.api.get_run(run_id)
            stack.api.cancel(run_id)
        return WrongKeyCase(sync_reply, synced, run, [e for e in steplog.read(stack.step_log) if e.token == tok])
    finally:
        bad.stop()


def test_wait_for_event_resumes_only_on_a_matching_event(stack: Stack, wait_case: WaitCase) -> None:
    assert wait_case.unmatched_answer["run_ids"] == [], "an awaited event triggers no function"
    assert wait_case.status_after_unmatched == "running", "a non-matching event must not resume the wait"
    assert wait_case.paused_after_unmatched
    run = stack.api.wait_for_run(wait_case.run_id)
    assert run["status"] == "completed", run
    assert run["output"] == {"approved": True, "by": "alice", "key": wait_case.key}
    assert summary(run) == [("approval", "wait", 1)]
    assert wait_case.run_id not in harness.waiting_runs(stack.database_url, "e2e/approve")


def test_cancel_a_sleeping_run(stack: Stack, cancel_case: CancelCase) -> None:
    assert cancel_case.first_answer == {"run_id": cancel_case.sleeping, "cancelled": True}
    assert cancel_case.second_answer == {"run_id": cancel_case.sleeping, "cancelled": False}, "an ended run stays"
    run = stack.api.get_run(cancel_case.sleeping)
    assert run["status"] == "cancelled", run
    assert executions(stack, cancel_case.sleeping, "never") == []


def test_cancel_stops_a_run_before_its_next_step(stack: Stack, cancel_case: CancelCase) -> None:
    assert cancel_case.mid_step_answer["cancelled"] is True
    run = stack.api.get_run(cancel_case.mid_step)
    assert run["status"] == "cancelled", run
    assert executions(stack, cancel_case.mid_step, "last") == []
    assert "last" not in [s["name"] for s in run["steps"]]


def test_app_with_a_wrong_signing_key_cannot_run_functions(wrong_key_case: WrongKeyCase) -> None:
    assert wrong_key_case.run["status"] != "completed", f"no silent success: {wrong_key_case.run}"
    assert wrong_key_case.executed == [], "the app must refuse the call, not run the function"


def test_wrong_signing_key_shows_on_the_run(wrong_key_case: WrongKeyCase) -> None:
    run = wrong_key_case.run
    assert run["status"] == "failed", run
    assert "401" in run["error"]["message"] or "unauthorized" in run["error"]["message"].lower(), run["error"]


def test_app_with_a_wrong_signing_key_cannot_sync(wrong_key_case: WrongKeyCase) -> None:
    harness.assert_error_body(wrong_key_case.sync_reply, 502)
    assert wrong_key_case.synced_functions == []


def test_sync_with_wrong_bearer_is_refused(stack: Stack, api: harness.Api) -> None:
    if not stack.production:
        pytest.skip("the API needs a bearer token in production mode")
    wrong = harness.Api(stack.server.url, harness.WRONG_SIGNING_KEY, stack.server.event_key)
    try:
        harness.assert_error_body(wrong.http.post("/v1/apps/sync", json={"url": "http://127.0.0.1:9/x"}), 401)
        harness.assert_error_body(wrong.http.get("/v1/functions"), 401)
    finally:
        wrong.close()


# step.run
@pytest.mark.parametrize("flavour", ["steps", "steps-sync"])
def test_step_run(stack: Stack, runs: Runs, flavour: str) -> None:
    run, tok = runs(flavour)
    assert run["status"] == "completed", run
    assert run["output"] == {"doubled": 40, "added": 41, "token": tok}
    assert run["function_id"] == f"{APP_ID}-{flavour}"
    assert summary(run) == [("double", "run", 1), ("add", "run", 1)]
    assert [s["output"] for s in run["steps"]] == [40, 41]
    assert run["event"]["name"] == f"e2e/{flavour}"
    assert [e.step for e in executions(stack, run["id"])] == ["double", "add"], "each step ran exactly once"


# group.parallel
def test_parallel_steps(stack: Stack, runs: Runs) -> None:
    run, _ = runs("parallel")
    assert run["status"] == "completed", run
    assert run["output"] == {"squares": [1, 4, 9], "total": 14}
    assert sorted(summary(run)) == [
        ("square-1", "run", 1),
        ("square-2", "run", 1),
        ("square-3", "run", 1),
        ("total", "run", 1),
    ]
    logged = executions(stack, run["id"])
    assert sorted(e.step for e in logged) == ["square-1", "square-2", "square-3", "total"]
    squares = [e for e in logged if e.step.startswith("square-")]
    # Parallel: every square started before any ended (each waits for the others to start).
    assert max(e.started for e in squares) < min(e.ended or 0 for e in squares), squares


# step.sleep
def test_sleep(stack: Stack, runs: Runs) -> None:
    run, _ = runs("sleep")
    assert run["status"] == "completed", run
    assert 1.0 <= run["output"]["slept"] < 10, run["output"]
    assert summary(run) == [("before", "run", 1), ("nap", "sleep", 1), ("after", "run", 1)]


# step.wait_for_event
def test_wait_for_event_times_out(stack: Stack, runs: Runs) -> None:
    run, _ = runs("wait-timeout")
    assert run["status"] == "completed", run
    assert run["output"] == {"approved": False}
    assert [s["name"] for s in run["steps"]] == ["approval"]


# step.invoke
def test_invoke(stack: Stack, api: harness.Api, runs: Runs) -> None:
    run, tok = runs("invoke")
    assert run["status"] == "completed", run
    assert run["output"] == {"child": {"tripled": 21}}
    assert summary(run) == [("call-child", "invoke", 1)]
    child_run = api.wait_for_run(run_started_with_token(stack, "child", tok))
    assert child_run["function_id"] == f"{APP_ID}-child"
    assert child_run["output"] == {"tripled": 21}


def test_invoke_of_a_failing_function_raises_in_the_caller(stack: Stack, runs: Runs) -> None:
    run, _ = runs("invoke-failing")
    assert run["status"] == "completed", run
    assert run["output"]["child_failed"] is True
    assert "the child refuses" in run["output"]["message"]


# step.send_event
def test_send_event_starts_another_function(stack: Stack, api: harness.Api, runs: Runs) -> None:
    run, tok = runs("send")
    assert run["status"] == "completed", run
    sent = run["output"]["sent"]
    assert isinstance(sent, list)
    assert len(sent) == 1
    assert summary(run) == [("emit", "run", 1)]
    received = api.wait_for_run(run_started_with_token(stack, "receiver", tok))
    assert received["status"] == "completed", received
    assert received["output"] == {"from": run["id"], "token": tok}
    assert received["event"]["name"] == "e2e/received"
    assert received["event"]["id"] == sent[0]


# failures
def test_on_failure_runs_after_retries_are_exhausted(stack: Stack, api: harness.Api, runs: Runs) -> None:
    run, tok = runs("on-failure")
    assert run["status"] == "failed", run
    assert run["error"]["name"] == "ValueError"
    assert run["error"]["message"] == f"boom {tok}"
    assert summary(run) == [("boom", "run", 2)], "retries=1: two attempts"
    assert len(executions(stack, run["id"], "boom")) == 2
    handler = api.wait_for_run(run_started_with_token(stack, "failing-handler", tok))
    assert handler["status"] == "completed", handler
    assert handler["function_id"] == f"{APP_ID}-failing-failure"
    assert handler["output"] == {
        "handled": "inngest/function.failed",
        "failed_run": run["id"],
        "message": f"boom {tok}",
    }


def test_non_retriable_error_fails_at_once(stack: Stack, runs: Runs) -> None:
    run, _ = runs("non-retriable")
    assert run["status"] == "failed", run
    assert run["error"]["name"] == "NonRetriableError"
    assert run["error"]["message"] == "no point retrying"
    assert len(executions(stack, run["id"], "refuse")) == 1, "retries=3, but a NonRetriableError is not retried"


def test_retry_after_error_delays_the_retry(stack: Stack, runs: Runs) -> None:
    run, _ = runs("retry-after")
    assert run["status"] == "completed", run
    assert run["output"] == {"result": "through"}
    assert summary(run) == [("limited", "run", 2)]
    first, second = executions(stack, run["id"], "limited")
    gap = second.started - first.started
    # A plain first retry comes after 0.5-1 s; Retry-After asked for 3 s.
    assert gap >= 2.7, f"retried {gap:.2f} s after the first attempt"


def test_step_failing_twice_then_succeeding(stack: Stack, runs: Runs) -> None:
    run, _ = runs("flaky")
    assert run["status"] == "completed", run
    assert run["output"] == {"result": "steady after 3"}
    assert summary(run) == [("wobbly", "run", 3)]
    assert run["steps"][0]["error"] is None
    assert len(executions(stack, run["id"], "wobbly")) == 3


def test_step_failing_more_than_its_retries_fails_the_run(stack: Stack, runs: Runs) -> None:
    run, _ = runs("too-flaky")
    assert run["status"] == "failed", run
    assert run["error"]["message"] == "wobble 4"
    assert summary(run) == [("wobbly", "run", 4)], "retries=3: four attempts"


# flow control configured through the Inngest SDK
@dataclasses.dataclass(frozen=True)
class FlowCase:
    rate: list[dict[str, Any]]
    idempotent: list[dict[str, Any]]
    debounced: list[dict[str, Any]]
    full_batch: list[dict[str, Any]]
    timed_batch: list[dict[str, Any]]
    singleton: list[dict[str, Any]]
    cancellable: str
    cancel_answer: dict[str, Any]
    time_boxed: str


@pytest.fixture(scope="module")
def flow_case(stack: Stack, inngest_app: harness.AppProcess) -> FlowCase:
    """Events sent to each flow-controlled function (keys are fresh tokens); the timed parts
    (debounce, batch timeout, finish timeout) run meanwhile and the tests wait for them."""
    api = stack.api

    def burst(name: str, count: int, **data: Any) -> list[dict[str, Any]]:
        tok = token()
        return [api.send(name, {"token": tok, "n": n, **data}) for n in range(1, count + 1)]

    cancellable_tok = token()
    cancellable = api.start("e2e/cancellable", {"token": cancellable_tok})
    time_boxed = api.start("e2e/time-boxed", {"token": token()})
    case = FlowCase(
        rate=burst("e2e/rate", 3),
        idempotent=burst("e2e/idempotent", 2),
        debounced=burst("e2e/debounce", 3),
        full_batch=burst("e2e/batch", 3),
        timed_batch=burst("e2e/batch", 2),
        singleton=burst("e2e/singleton", 2, seconds=2),
        cancellable=cancellable,
        cancel_answer={},
        time_boxed=time_boxed,
    )
    harness.wait_for(lambda: executions(stack, cancellable, "start"), 15, "the cancellable run's first step")
    answer = api.send("e2e/cancel-job", {"token": cancellable_tok})
    return dataclasses.replace(case, cancel_answer=answer)


def runs_of_event(api: harness.Api, answer: dict[str, Any]) -> list[dict[str, Any]]:
    [event_id] = answer["ids"]
    reply = api.http.get(f"/v1/events/{event_id}")
    assert reply.status_code == 200, reply.text
    runs: list[dict[str, Any]] = reply.json()["data"]["runs"]
    return runs


def test_rate_limit_skips_and_records_runs_beyond_the_rate(stack: Stack, flow_case: FlowCase) -> None:
    assert [len(answer["run_ids"]) for answer in flow_case.rate] == [1, 0, 0]
    run = stack.api.wait_for_run(flow_case.rate[0]["run_ids"][0])
    assert run["status"] == "completed", run
    assert run["output"] == {"n": 1}
    for answer in flow_case.rate[1:]:
        [skipped] = runs_of_event(stack.api, answer)
        assert skipped["status"] == "skipped", skipped
        assert skipped["error"]["name"] == "Skipped"
        assert skipped["error"]["message"].startswith("rate limit: more than 1 run(s) per 1h for key ")


def test_idempotency_key_starts_one_run(stack: Stack, flow_case: FlowCase) -> None:
    assert [len(answer["run_ids"]) for answer in flow_case.idempotent] == [1, 0]
    assert runs_of_event(stack.api, flow_case.idempotent[1]) == []
    run = stack.api.wait_for_run(flow_case.idempotent[0]["run_ids"][0])
    assert run["output"] == {"n": 1}


def test_debounce_runs_once_with_the_last_event(stack: Stack, flow_case: FlowCase) -> None:
    run_ids = [answer["run_ids"][0] for answer in flow_case.debounced]
    last = stack.api.wait_for_run(run_ids[-1])
    assert last["status"] == "completed", last
    assert last["output"] == {"n": 3}
    for run_id in run_ids[:-1]:
        replaced = stack.api.get_run(run_id)
        assert replaced["status"] == "skipped", replaced
        assert replaced["error"]["message"] == "debounced: a later event replaced it"


def test_batch_gives_one_run_the_events_of_a_full_batch(stack: Stack, flow_case: FlowCase) -> None:
    run_ids = {answer["run_ids"][0] for answer in flow_case.full_batch}
    assert len(run_ids) == 1
    run = stack.api.wait_for_run(run_ids.pop())
    assert run["status"] == "completed", run
    assert run["output"] == {"numbers": [1, 2, 3]}
    assert [event["data"]["n"] for event in run["events"]] == [1, 2, 3]


def test_batch_starts_at_its_timeout_when_not_full(stack: Stack, flow_case: FlowCase) -> None:
    run_ids = {answer["run_ids"][0] for answer in flow_case.timed_batch}
    assert len(run_ids) == 1
    run = stack.api.wait_for_run(run_ids.pop())
    assert run["status"] == "completed", run
    assert run["output"] == {"numbers": [1, 2]}
    assert run["started_at"] - run["created_at"] >= 1900, "a batch that is not full waits for its 2 s timeout"


def test_singleton_skips_a_run_while_one_is_running(stack: Stack, flow_case: FlowCase) -> None:
    first, second = flow_case.singleton
    assert len(first["run_ids"]) == 1
    assert second["run_ids"] == []
    [skipped] = runs_of_event(stack.api, second)
    assert skipped["status"] == "skipped", skipped
    assert skipped["error"]["message"].startswith("singleton: run ")
    assert stack.api.wait_for_run(first["run_ids"][0])["output"] == {"n": 1}


def test_cancel_on_a_matching_event_cancels_the_run(stack: Stack, flow_case: FlowCase) -> None:
    assert flow_case.cancel_answer["run_ids"] == [], "the cancelling event triggers no function"
    run = stack.api.wait_for_run(flow_case.cancellable)
    assert run["status"] == "cancelled", run
    assert run["error"]["message"].startswith("cancel_on: event 'e2e/cancel-job'"), run["error"]
    assert executions(stack, flow_case.cancellable, "never") == []


def test_finish_timeout_cancels_a_run_that_takes_too_long(stack: Stack, flow_case: FlowCase) -> None:
    run = stack.api.wait_for_run(flow_case.time_boxed)
    assert run["status"] == "cancelled", run
    assert run["error"] == {"name": "Cancelled", "message": "timeouts.finish: the run did not finish within 2s"}
    assert [step["name"] for step in run["steps"]] == ["start"]


# flow control, configured with inngest.Concurrency, inngest.Throttle and inngest.Priority
def _peak(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = peak = 0
    for _, change in edges:
        now += change
        peak = max(peak, now)
    return peak


def test_concurrency_limits_hold_per_function_and_per_key(stack: Stack, api: harness.Api) -> None:
    tok = token()
    users = ["a", "a", "b", "b", "c", "c"]
    run_ids = [api.start("e2e/limited", {"user": user, "token": f"{tok}-{user}", "seconds": 0.3}) for user in users]
    for run_id in run_ids:
        assert api.wait_for_run(run_id)["status"] == "completed"

    logged = [e for e in steplog.read(stack.step_log) if e.fn == "limited" and e.token.startswith(tok)]
    assert len(logged) == len(users)
    intervals = [(e.started, e.ended or e.started) for e in logged]
    assert _peak(intervals) <= 2
    assert max(_peak([(e.started, e.ended or 0) for e in logged if e.token.endswith(user)]) for user in "abc") == 1


def test_throttled_starts_keep_to_the_rate(stack: Stack, api: harness.Api) -> None:
    tok = token()
    sent = time.time()
    run_ids = [api.start("e2e/throttled", {"token": tok}) for _ in range(3)]
    for run_id in run_ids:
        assert api.wait_for_run(run_id)["status"] == "completed"

    starts = sorted(e.started for e in steplog.read(stack.step_log) if e.fn == "throttled" and e.token == tok)
    # One start a second: the third cannot begin before two seconds after the sends.
    assert len(starts) == 3
    assert starts[2] - sent >= 1.9, [round(start - sent, 3) for start in starts]


def test_priority_runs_first_when_a_slot_frees(stack: Stack, api: harness.Api) -> None:
    tok = token()
    blocker = api.start("e2e/prioritized", {"token": f"{tok}-blocker", "seconds": 1.5, "p": 0})
    harness.wait_for(
        lambda: any(e.token == f"{tok}-blocker" for e in steplog.read(stack.step_log)), 15, "the blocker to start"
    )
    low = api.start("e2e/prioritized", {"token": f"{tok}-low", "p": 0})
    high = api.start("e2e/prioritized", {"token": f"{tok}-high", "p": 120})
    for run_id in (blocker, low, high):
        assert api.wait_for_run(run_id)["status"] == "completed"

    order = [e.token for e in sorted(steplog.read(stack.step_log), key=lambda e: e.started) if e.token.startswith(tok)]
    assert order == [f"{tok}-blocker", f"{tok}-high", f"{tok}-low"]
