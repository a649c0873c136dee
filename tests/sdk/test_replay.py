"""The replay engine against hand-built execution requests: what each call answers.

These are the exact responses the HTTP serve handler will send, so they pin the wire
behaviour (sections 4 and 5 of the protocol notes) independently of the engine.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import stepline
from stepline.protocol import hashing, models
from stepline.sdk import execution

client = stepline.Stepline(app_id="replay")
calls: list[str] = []


def _record(name: str, value: Any = None) -> Any:
    calls.append(name)
    return value if value is not None else name


@client.function(id="three", trigger=stepline.on_event("t/three"), retries=2)
async def three(ctx: stepline.Context) -> dict[str, Any]:
    a = await ctx.step.run("a", _record, "a")
    b, c = await ctx.step.parallel(lambda: ctx.step.run("b", _record, "b"), lambda: ctx.step.run("c", _record, "c"))
    await ctx.step.sleep("nap", timedelta(minutes=5))
    approved = await ctx.step.wait_for_event("ok", event="t/ok", if_exp="async.data.id == event.data.id")
    return {"a": a, "b": b, "c": c, "approved": approved.data if approved else None}


@client.function(id="fails", trigger=stepline.on_event("t/fails"), retries=1)
def fails(ctx: stepline.ContextSync) -> None:
    ctx.step.run("boom", _boom)


@client.function(id="hard-fail", trigger=stepline.on_event("t/hard"))
async def hard_fail(ctx: stepline.Context) -> None:
    raise stepline.NonRetriableError("no point retrying")


def _boom() -> None:
    raise RuntimeError("kaboom")


def _request(
    steps: dict[str, Any], *, step_id: str = "step", attempt: int = 0, max_attempts: int = 3
) -> models.ExecutionRequest:
    event = {"name": "t/three", "data": {"id": 7}, "id": "e1", "ts": 1, "user": {}}
    return models.ExecutionRequest(
        ctx=models.RequestContext(run_id="r1", attempt=attempt, max_attempts=max_attempts, step_id=step_id),
        event=event,
        events=[event],
        steps=steps,
    )


def h(step_id: str) -> str:
    return hashing.hash_step_id(step_id)


async def test_discovery_runs_the_first_new_step_and_returns_its_result() -> None:
    calls.clear()
    response = await execution.execute(three, client, _request({}))
    assert response.status == 206
    assert response.body == [
        {
            "op": "StepRun",
            "id": h("a"),
            "name": "a",
            "displayName": "a",
            "opts": None,
            "data": "a",
            "userland": {"id": "a", "index": None},
        }
    ]
    assert calls == ["a"]


async def test_parallel_steps_are_planned_not_run() -> None:
    calls.clear()
    response = await execution.execute(three, client, _request({h("a"): {"data": "a"}}))
    assert response.status == 206
    assert [(op["op"], op["id"]) for op in response.body] == [("StepPlanned", h("b")), ("StepPlanned", h("c"))]
    assert calls == []


async def test_a_targeted_call_runs_only_its_step() -> None:
    calls.clear()
    response = await execution.execute(three, client, _request({h("a"): {"data": "a"}}, step_id=h("c")))
    assert response.status == 206
    assert [(op["op"], op["id"], op["data"]) for op in response.body] == [("StepRun", h("c"), "c")]
    assert calls == ["c"]


async def test_sleep_then_wait_then_completion() -> None:
    memo: dict[str, Any] = {h("a"): {"data": "a"}, h("b"): {"data": "b"}, h("c"): {"data": "c"}}
    sleep = await execution.execute(three, client, _request(memo))
    assert [(op["op"], op["opts"]) for op in sleep.body] == [("Sleep", {"duration": "300000ms"})]
    memo[h("nap")] = None
    wait = await execution.execute(three, client, _request(memo))
    (op,) = wait.body
    assert op["op"] == "WaitForEvent"
    assert op["name"] == "t/ok"
    assert op["opts"]["if"] == "async.data.id == event.data.id"
    memo[h("ok")] = {"name": "t/ok", "data": {"id": 7}, "id": "e2", "ts": 2}
    done = await execution.execute(three, client, _request(memo))
    assert done.status == 200
    assert done.body == {"a": "a", "b": "b", "c": "c", "approved": {"id": 7}}


async def test_a_failing_step_is_retriable_until_its_last_attempt() -> None:
    first = await _sync_call(fails, attempt=0, max_attempts=2)
    assert [op["op"] for op in first.body] == ["StepError"]
    assert first.body[0]["error"]["message"] == "kaboom"
    last = await _sync_call(fails, attempt=1, max_attempts=2)
    assert [op["op"] for op in last.body] == ["StepFailed"]


async def test_a_recorded_step_error_surfaces_as_step_error_and_fails_without_retry() -> None:
    request = _request({h("boom"): {"error": {"name": "RuntimeError", "message": "kaboom"}}})
    response = execution.execute_sync(fails, client, request)
    assert response.status == 500
    assert response.no_retry
    assert response.body["message"] == "kaboom"


async def test_non_retriable_function_error() -> None:
    response = await execution.execute(hard_fail, client, _request({}))
    assert response.status == 500
    assert response.no_retry
    assert response.body["name"] == "NonRetriableError"


async def test_unreached_recorded_steps_are_reported_as_nondeterminism() -> None:
    response = await execution.execute(three, client, _request({h("something-else"): {"data": 1}}))
    assert response.status == 500
    assert response.no_retry
    assert "changed between calls" in response.body["message"]


async def _sync_call(function: stepline.Function, *, attempt: int, max_attempts: int) -> Any:
    return execution.execute_sync(function, client, _request({}, attempt=attempt, max_attempts=max_attempts))
