"""Stepline's own SDK end to end: the same scenarios under FastAPI, Flask and Django, async and sync.

One server per backend and mode (``stepline dev``, ``stepline start``) and the three adapter apps
(``tests/e2e/apps/stepline_*_app.py``, all serving ``stepline_functions``) run as subprocesses.
Every scenario's runs start at once and the tests then read their results, so the sleeps and
retry delays of all of them overlap.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stepline.protocol import signing
from stepline.sdk.settings import VERSION as stepline_version
from tests.e2e import harness, steplog
from tests.e2e.conftest import Stack

ADAPTERS = ("fastapi", "flask", "django")
FLAVOURS = ("async", "sync")
COMBOS = [(adapter, flavour) for adapter in ADAPTERS for flavour in FLAVOURS]
combos = pytest.mark.parametrize(("adapter", "flavour"), COMBOS)
adapters = pytest.mark.parametrize("adapter", ADAPTERS)
SERVE_PATH = "/api/stepline"
SCENARIO_FUNCTIONS = [
    "steps",
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
]


def app_id_of(adapter: str) -> str:
    return f"e2e-{adapter}"


def fn_id(adapter: str, flavour: str, name: str) -> str:
    return f"{app_id_of(adapter)}-{name}-{flavour}"


def event(adapter: str, flavour: str, name: str) -> str:
    return f"{adapter}/{flavour}/{name}"


def token() -> str:
    return uuid.uuid4().hex[:12]


def app_process(
    stack: Stack,
    adapter: str,
    *,
    app_id: str | None = None,
    prefix: str | None = None,
    signing_key: str | None = None,
    port: int | None = None,
) -> harness.AppProcess:
    name = app_id or app_id_of(adapter)
    env = harness.stepline_env(stack.server, stack.step_log, signing_key=signing_key, app_id=name)
    env["E2E_EVENT_PREFIX"] = prefix or adapter
    log = stack.directory / f"{name}-{port or 'first'}.log"
    if adapter == "fastapi":
        target = "tests.e2e.apps.stepline_fastapi_app:app"
        return harness.AppProcess(target, log, env, serve_path=SERVE_PATH, port=port)
    module = f"tests.e2e.apps.stepline_{adapter}_app"
    command = [sys.executable, "-m", module, "{port}"]
    return harness.AppProcess(module, log, env, serve_path=SERVE_PATH, port=port, command=command)


@pytest.fixture(scope="module")
def apps(stack: Stack) -> Iterator[dict[str, harness.AppProcess]]:
    """The three adapter apps, started together and synced."""
    processes: dict[str, harness.AppProcess] = {adapter: app_process(stack, adapter) for adapter in ADAPTERS}
    for process in processes.values():
        process.spawn()
    try:
        stack.ready()
        for process in processes.values():
            process.wait_ready()
            stack.api.sync(process.url)
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def executions(stack: Stack, run_id: str, step: str | None = None) -> list[steplog.Execution]:
    return [e for e in steplog.read(stack.step_log) if e.run_id == run_id and (step is None or e.step == step)]


def run_started_with_token(stack: Stack, fn: str, tok: str, timeout: float = 20) -> str:
    def found() -> str | None:
        return next((e.run_id for e in steplog.read(stack.step_log) if e.fn == fn and e.token == tok), None)

    return harness.wait_for(found, timeout, f"a run of {fn} with token {tok}")


def summary(run: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(step["name"], step["kind"], step["attempts"]) for step in run["steps"]]


@dataclasses.dataclass(frozen=True)
class Started:
    run_id: str
    token: str


SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "steps": ("steps", {"n": 20}),
    "parallel": ("parallel", {}),
    "sleep": ("sleep", {"seconds": 1}),
    "wait-timeout": ("wait", {"timeout": 1}),
    "invoke": ("invoke", {"x": 7}),
    "invoke-failing": ("invoke", {"x": 1, "fail": True}),
    "invoke-unknown": ("invoke", {"x": 1, "target": "e2e-nobody-nothing"}),
    "send": ("send", {}),
    "on-failure": ("fail", {}),
    "non-retriable": ("non-retriable", {}),
    "retry-after": ("retry-after", {"delay": 3}),
    "flaky": ("flaky", {"failures": 2}),
    "too-flaky": ("flaky", {"failures": 10}),
}


@pytest.fixture(scope="module")
def started(stack: Stack, apps: dict[str, harness.AppProcess]) -> dict[tuple[str, str, str], Started]:
    """Every scenario's run under every adapter and flavour, started at once."""
    runs: dict[tuple[str, str, str], Started] = {}
    for adapter, flavour in COMBOS:
        for scenario, (name, data) in SCENARIOS.items():
            tok = token()
            run_id = stack.api.start(event(adapter, flavour, name), {**data, "token": tok})
            runs[(adapter, flavour, scenario)] = Started(run_id, tok)
    return runs


Runs = Callable[[str, str, str], tuple[dict[str, Any], str]]


@pytest.fixture
def runs(stack: Stack, started: dict[tuple[str, str, str], Started]) -> Runs:
    def ended(adapter: str, flavour: str, scenario: str) -> tuple[dict[str, Any], str]:
        begun = started[(adapter, flavour, scenario)]
        return stack.api.wait_for_run(begun.run_id), begun.token

    return ended


@dataclasses.dataclass(frozen=True)
class WaitCase:
    run_id: str
    key: str
    unmatched_answer: dict[str, Any]
    status_after_unmatched: str
    paused_after_unmatched: bool


@pytest.fixture(scope="module")
def waits(stack: Stack, started: dict[tuple[str, str, str], Started]) -> dict[tuple[str, str], WaitCase]:
    """wait_for_event under every adapter and flavour: a non-matching event, then a matching one."""
    api = stack.api
    begun = {
        combo: (api.start(event(*combo, "wait"), {"key": (key := token()), "timeout": 30}), key) for combo in COMBOS
    }

    def all_paused() -> bool:
        return all(
            run_id in harness.waiting_runs(stack.database_url, event(*combo, "approve"))
            for combo, (run_id, _) in begun.items()
        )

    harness.wait_for(all_paused, 20, "every run to wait")
    unmatched = {
        combo: api.send(event(*combo, "approve"), {"key": "someone-else", "by": "mallory"}) for combo in COMBOS
    }
    time.sleep(1)
    cases = {}
    for combo, (run_id, key) in begun.items():
        paused = run_id in harness.waiting_runs(stack.database_url, event(*combo, "approve"))
        cases[combo] = WaitCase(run_id, key, unmatched[combo], api.get_run(run_id)["status"], paused)
    for combo, (_, key) in begun.items():
        api.send(event(*combo, "approve"), {"key": key, "by": "alice"})
    return cases


@dataclasses.dataclass(frozen=True)
class CancelCase:
    sleeping: str
    mid_step: str
    first_answer: dict[str, Any]
    second_answer: dict[str, Any]
    mid_step_answer: dict[str, Any]


@pytest.fixture(scope="module")
def cancellations(stack: Stack, started: dict[tuple[str, str, str], Started]) -> dict[tuple[str, str], CancelCase]:
    """Cancel, under every adapter and flavour, a sleeping run and a run whose step is executing."""
    api = stack.api
    sleeping = {combo: api.start(event(*combo, "long-sleep"), {}) for combo in COMBOS}
    mid_step = {combo: api.start(event(*combo, "slow"), {"seconds": 1.5, "nap": 0.2}) for combo in COMBOS}

    def ready() -> bool:
        return all(
            any(s["name"] == "start" for s in api.get_run(sleeping[combo])["steps"])
            and executions(stack, mid_step[combo], "slow")
            for combo in COMBOS
        )

    harness.wait_for(ready, 20, "the first steps")
    cases = {}
    for combo in COMBOS:
        mid_step_answer = api.cancel(mid_step[combo])
        first = api.cancel(sleeping[combo])
        cases[combo] = CancelCase(sleeping[combo], mid_step[combo], first, api.cancel(sleeping[combo]), mid_step_answer)

    def slow_steps_ended() -> bool:
        return all(all(e.ended for e in executions(stack, mid_step[combo], "slow")) for combo in COMBOS)

    harness.wait_for(slow_steps_ended, 20, "the slow steps to end")
    time.sleep(1)  # ample for the nap and the last step, had the runs gone on
    return cases


# sync
@adapters
def test_sync_registers_every_function(stack: Stack, apps: dict[str, harness.AppProcess], adapter: str) -> None:
    ids = {fn["id"] for fn in stack.api.functions()}
    expected = {fn_id(adapter, flavour, name) for flavour in FLAVOURS for name in SCENARIO_FUNCTIONS}
    assert expected <= ids
    assert {f"{app_id_of(adapter)}-failing-{flavour}-failure" for flavour in FLAVOURS} <= ids
    app = next(app for app in stack.api.http.get("/v1/apps").json()["data"] if app["id"] == app_id_of(adapter))
    assert app["url"] == apps[adapter].url
    assert app["sdk"].endswith(f":v{stepline_version}"), app
    before = {fn["id"]: fn for fn in stack.api.functions()}
    stack.api.sync(apps[adapter].url)
    assert {fn["id"]: fn for fn in stack.api.functions()} == before, "an unchanged app syncs as a no-op"


def test_in_band_sync_records_the_stepline_sdk(stack: Stack, apps: dict[str, harness.AppProcess]) -> None:
    if not stack.production:
        pytest.skip("dev servers sync out of band")
    app = next(app for app in stack.api.http.get("/v1/apps").json()["data"] if app["id"] == app_id_of("fastapi"))
    assert app["sdk"] == f"stepline-py:v{stepline_version}", app


# keys (production)
@dataclasses.dataclass(frozen=True)
class WrongKeyCase:
    sync_reply: httpx.Response
    run: dict[str, Any]
    executed: list[steplog.Execution]


@pytest.fixture(scope="module")
def wrong_key_case(stack: Stack, started: dict[tuple[str, str, str], Started]) -> WrongKeyCase:
    """A FastAPI app registered, but running with a wrong signing key: a sync, and a run."""
    if not stack.production:
        pytest.skip("signing keys are checked in production mode")
    bad = app_process(
        stack, "fastapi", app_id="e2e-wrongkey", prefix="wrongkey", signing_key=harness.WRONG_SIGNING_KEY
    ).start()
    try:
        sync_reply = stack.api.http.post("/v1/apps/sync", json={"url": bad.url})
        harness.register_with_key(stack.api, bad.url, harness.WRONG_SIGNING_KEY)
        tok = token()
        run = stack.api.run_and_wait("wrongkey/async/fail", {"token": tok}, timeout=20)  # retries=1
        return WrongKeyCase(sync_reply, run, [e for e in steplog.read(stack.step_log) if e.token == tok])
    finally:
        bad.stop()


def test_app_with_a_wrong_signing_key_cannot_sync(wrong_key_case: WrongKeyCase) -> None:
    harness.assert_error_body(wrong_key_case.sync_reply, 502)


def test_app_with_a_wrong_signing_key_cannot_run_functions(wrong_key_case: WrongKeyCase) -> None:
    """The app refuses the server's calls: the run fails, and says why."""
    run = wrong_key_case.run
    assert run["status"] == "failed", run
    assert run["error"]["name"] == "SignatureRejected", run["error"]
    assert "same signing key" in run["error"]["message"], run["error"]
    assert wrong_key_case.executed == [], "the app must run nothing"


# wait_for_event and cancellation (the fixtures did the work, all adapters at once)
@combos
def test_wait_for_event_resumes_only_on_a_matching_event(
    stack: Stack, waits: dict[tuple[str, str], WaitCase], adapter: str, flavour: str
) -> None:
    case = waits[(adapter, flavour)]
    assert case.unmatched_answer["run_ids"] == [], "an awaited event triggers no function"
    assert case.status_after_unmatched == "running", "a non-matching event must not resume the wait"
    assert case.paused_after_unmatched
    run = stack.api.wait_for_run(case.run_id)
    assert run["status"] == "completed", run
    assert run["output"] == {"approved": True, "by": "alice", "key": case.key}
    assert summary(run) == [("approval", "wait", 1)]


@combos
def test_cancel_a_sleeping_run(
    stack: Stack, cancellations: dict[tuple[str, str], CancelCase], adapter: str, flavour: str
) -> None:
    case = cancellations[(adapter, flavour)]
    assert case.first_answer == {"run_id": case.sleeping, "cancelled": True}
    assert case.second_answer == {"run_id": case.sleeping, "cancelled": False}, "an ended run stays as it is"
    run = stack.api.get_run(case.sleeping)
    assert run["status"] == "cancelled", run
    assert executions(stack, case.sleeping, "never") == []


@combos
def test_cancel_stops_a_run_before_its_next_step(
    stack: Stack, cancellations: dict[tuple[str, str], CancelCase], adapter: str, flavour: str
) -> None:
    case = cancellations[(adapter, flavour)]
    assert case.mid_step_answer["cancelled"] is True
    run = stack.api.get_run(case.mid_step)
    assert run["status"] == "cancelled", run
    assert executions(stack, case.mid_step, "last") == []
    assert "last" not in [s["name"] for s in run["steps"]]


# the scenarios
@combos
def test_step_run(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, tok = runs(adapter, flavour, "steps")
    assert run["status"] == "completed", run
    assert run["output"] == {"doubled": 40, "added": 41, "token": tok}
    assert run["function_id"] == fn_id(adapter, flavour, "steps")
    assert summary(run) == [("double", "run", 1), ("add", "run", 1)]
    assert [s["output"] for s in run["steps"]] == [40, 41]
    assert [e.step for e in executions(stack, run["id"])] == ["double", "add"], "each step ran exactly once"


@combos
def test_parallel_steps(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, _ = runs(adapter, flavour, "parallel")
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


@combos
def test_sleep(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, _ = runs(adapter, flavour, "sleep")
    assert run["status"] == "completed", run
    assert 1.0 <= run["output"]["slept"] < 10, run["output"]
    assert summary(run) == [("before", "run", 1), ("nap", "sleep", 1), ("after", "run", 1)]


@combos
def test_wait_for_event_times_out(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, _ = runs(adapter, flavour, "wait-timeout")
    assert run["status"] == "completed", run
    assert run["output"] == {"approved": False}
    assert [s["name"] for s in run["steps"]] == ["approval"]


@combos
def test_invoke(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, tok = runs(adapter, flavour, "invoke")
    assert run["status"] == "completed", run
    assert run["output"] == {"child": {"tripled": 21}}
    assert summary(run) == [("call-child", "invoke", 1)]
    child_run = stack.api.wait_for_run(run_started_with_token(stack, "child", tok))
    assert child_run["function_id"] == fn_id(adapter, flavour, "child")
    assert child_run["output"] == {"tripled": 21}


@combos
def test_invoke_of_a_failing_function_raises_in_the_caller(
    stack: Stack, runs: Runs, adapter: str, flavour: str
) -> None:
    run, _ = runs(adapter, flavour, "invoke-failing")
    assert run["status"] == "completed", run
    assert run["output"]["child_failed"] is True
    assert "the child refuses" in run["output"]["message"]


@combos
def test_invoke_of_an_unknown_function_raises_in_the_caller(
    stack: Stack, runs: Runs, adapter: str, flavour: str
) -> None:
    run, _ = runs(adapter, flavour, "invoke-unknown")
    assert run["status"] == "completed", run
    assert run["output"]["child_failed"] is True
    assert "e2e-nobody-nothing" in run["output"]["message"]


@combos
def test_send_event_starts_another_function(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, tok = runs(adapter, flavour, "send")
    assert run["status"] == "completed", run
    sent = run["output"]["sent"]
    assert isinstance(sent, list)
    assert len(sent) == 1
    assert summary(run) == [("emit", "run", 1)]
    received = stack.api.wait_for_run(run_started_with_token(stack, "receiver", tok))
    assert received["status"] == "completed", received
    assert received["function_id"] == fn_id(adapter, flavour, "receiver")
    assert received["output"] == {"from": run["id"], "token": tok}
    assert received["event"]["id"] == sent[0]


@combos
def test_on_failure_runs_after_retries_are_exhausted(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, tok = runs(adapter, flavour, "on-failure")
    assert run["status"] == "failed", run
    assert run["error"]["name"] == "ValueError"
    assert run["error"]["message"] == f"boom {tok}"
    assert summary(run) == [("boom", "run", 2)], "retries=1: two attempts"
    assert len(executions(stack, run["id"], "boom")) == 2
    handler = stack.api.wait_for_run(run_started_with_token(stack, "failing-handler", tok))
    assert handler["status"] == "completed", handler
    assert handler["function_id"] == f"{fn_id(adapter, flavour, 'failing')}-failure"
    assert handler["output"] == {
        "handled": "inngest/function.failed",
        "failed_run": run["id"],
        "message": f"boom {tok}",
    }


@combos
def test_non_retriable_error_fails_at_once(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, _ = runs(adapter, flavour, "non-retriable")
    assert run["status"] == "failed", run
    assert run["error"]["name"] == "NonRetriableError"
    assert run["error"]["message"] == "no point retrying"
    assert len(executions(stack, run["id"], "refuse")) == 1, "retries=3, but a NonRetriableError is not retried"


@combos
def test_retry_after_error_delays_the_retry(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, _ = runs(adapter, flavour, "retry-after")
    assert run["status"] == "completed", run
    assert run["output"] == {"result": "through"}
    assert summary(run) == [("limited", "run", 2)]
    first, second = executions(stack, run["id"], "limited")
    gap = second.started - first.started
    assert gap >= 2.7, f"retried {gap:.2f} s after the first attempt; Retry-After asked for 3 s"


@combos
def test_step_failing_twice_then_succeeding(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, _ = runs(adapter, flavour, "flaky")
    assert run["status"] == "completed", run
    assert run["output"] == {"result": "steady after 3"}
    assert summary(run) == [("wobbly", "run", 3)]
    assert len(executions(stack, run["id"], "wobbly")) == 3


@combos
def test_step_failing_more_than_its_retries_fails_the_run(stack: Stack, runs: Runs, adapter: str, flavour: str) -> None:
    run, _ = runs(adapter, flavour, "too-flaky")
    assert run["status"] == "failed", run
    assert run["error"]["message"] == "wobble 4"
    assert summary(run) == [("wobbly", "run", 4)], "retries=3: four attempts"


# the serve endpoint's answers to bad requests
def execution_body(run_id: str, tok: str) -> bytes:
    trigger = {"name": "fastapi/async/steps", "data": {"n": 1, "token": tok}, "id": token(), "ts": 1_700_000_000_000}
    body = {
        "ctx": {"attempt": 0, "fn_id": "x", "run_id": run_id, "step_id": "step", "stack": {"stack": [], "current": 0}},
        "event": trigger,
        "events": [trigger],
        "steps": {},
        "version": 2,
    }
    return signing.canonical_json(body)


def post_to_app(
    stack: Stack, apps: dict[str, harness.AppProcess], adapter: str, fn: str, body: bytes, key: str | None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[signing.SIGNATURE_HEADER] = signing.sign(body, key, int(time.time()))
    return httpx.post(apps[adapter].url, params={"fnId": fn, "stepId": "step"}, content=body, headers=headers)


@adapters
def test_bad_signature_is_refused_and_runs_nothing(
    stack: Stack, apps: dict[str, harness.AppProcess], adapter: str
) -> None:
    if not stack.production:
        pytest.skip("dev mode checks no signatures")
    tok = token()
    body = execution_body(f"01BADSIG{tok}", tok)
    for key in (harness.WRONG_SIGNING_KEY, None):
        reply = post_to_app(stack, apps, adapter, fn_id(adapter, "async", "steps"), body, key)
        assert reply.status_code == 401, reply.text
        assert reply.headers["content-type"].startswith("application/json")
    time.sleep(0.3)
    assert not [e for e in steplog.read(stack.step_log) if e.token == tok], "a refused call must run nothing"


@adapters
def test_bad_signature_body_is_error_and_status(
    stack: Stack, apps: dict[str, harness.AppProcess], adapter: str
) -> None:
    if not stack.production:
        pytest.skip("dev mode checks no signatures")
    body = execution_body("01BADSIGNATURE", token())
    reply = post_to_app(stack, apps, adapter, fn_id(adapter, "async", "steps"), body, harness.WRONG_SIGNING_KEY)
    harness.assert_error_body(reply, 401)


@adapters
def test_unknown_function_is_404(stack: Stack, apps: dict[str, harness.AppProcess], adapter: str) -> None:
    key = harness.SIGNING_KEY if stack.production else None
    reply = post_to_app(
        stack, apps, adapter, f"{app_id_of(adapter)}-nothing", execution_body("01UNKNOWN", token()), key
    )
    harness.assert_error_body(reply, 404)


@adapters
def test_malformed_execution_request_is_400(stack: Stack, apps: dict[str, harness.AppProcess], adapter: str) -> None:
    key = harness.SIGNING_KEY if stack.production else None
    body = signing.canonical_json({"not": "an execution request"})
    reply = post_to_app(stack, apps, adapter, fn_id(adapter, "async", "steps"), body, key)
    harness.assert_error_body(reply, 400)


# flow control configured through Stepline's SDK, synced over HTTP by each adapter
@adapters
def test_flow_control_from_the_stepline_sdk(stack: Stack, apps: dict[str, harness.AppProcess], adapter: str) -> None:
    api, tok = stack.api, token()
    batch = [api.send(f"{adapter}/flow/batch", {"token": tok, "n": n}) for n in (1, 2, 3)]
    rate = [api.send(f"{adapter}/flow/rate", {"token": tok, "n": n}) for n in (1, 2)]
    cancellable = api.start(f"{adapter}/flow/cancellable", {"token": tok})

    [batch_run] = {answer["run_ids"][0] for answer in batch}
    run = api.wait_for_run(batch_run)
    assert run["status"] == "completed", run
    assert run["output"] == {"numbers": [1, 2, 3]}
    assert [event["data"]["n"] for event in run["events"]] == [1, 2, 3]

    assert [len(answer["run_ids"]) for answer in rate] == [1, 0]
    assert api.wait_for_run(rate[0]["run_ids"][0])["output"] == {"n": 1}

    def started() -> bool:
        return any(e.run_id == cancellable and e.step == "start" for e in steplog.read(stack.step_log))

    harness.wait_for(started, 15, "the cancellable run's first step")
    api.send(f"{adapter}/flow/cancel-job", {"token": tok})
    cancelled = api.wait_for_run(cancellable)
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["error"]["message"].startswith(f"cancel_on: event '{adapter}/flow/cancel-job'")
