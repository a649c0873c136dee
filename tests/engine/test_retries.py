"""Retries are per step: N retries mean N+1 attempts, with backoff, NonRetriableError and RetryAfterError."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_named, step_names

BACKOFF = timedelta(minutes=10)
"""Comfortably past every backoff the first few retries can draw."""


async def test_step_failing_twice_then_succeeding_runs_three_times(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-flaky")
    calls: Counter[str] = Counter()

    def before() -> str:
        calls["before"] += 1
        return "ok"

    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise RuntimeError(f"flaky failure {calls['flaky']}")
        return "finally"

    def after(value: str) -> str:
        calls["after"] += 1
        return value.upper()

    @client.function(id="flaky", trigger=stepline.on_event("test/flaky"), retries=4)
    async def flaky_fn(ctx: stepline.Context) -> list[str]:
        a = await ctx.step.run("before", before)
        b = await ctx.step.run("flaky", flaky)
        c = await ctx.step.run("after", after, b)
        return [a, b, c]

    async with TestEngine(client, [flaky_fn], database_url=database_url) as engine:
        run_id = await start(engine, "test/flaky")
        await engine.run_until_idle()
        assert calls == {"before": 1, "flaky": 1}  # the retry waits for its backoff
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == ["ok", "finally", "FINALLY"]
    assert calls == {"before": 1, "flaky": 3, "after": 1}
    assert step_names(run) == ["before", "flaky", "after"]
    assert step_named(run, "before").attempts == 1
    assert step_named(run, "flaky").attempts == 3
    assert step_named(run, "after").attempts == 1


async def test_sync_step_failing_then_succeeding_is_retried(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-flaky-sync")
    calls: Counter[str] = Counter()

    def flaky() -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError("first try fails")
        return 7

    @client.function(id="flaky-sync", trigger=stepline.on_event("test/flaky-sync"), retries=1)
    def flaky_fn(ctx: stepline.ContextSync) -> int:
        return ctx.step.run("flaky", flaky)

    async with TestEngine(client, [flaky_fn], database_url=database_url) as engine:
        run_id = await start(engine, "test/flaky-sync")
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == 7
    assert calls == {"flaky": 2}


async def test_step_always_failing_fails_run_after_retries_and_runs_on_failure_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-exhaust")
    calls: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []

    def doomed() -> None:
        calls["doomed"] += 1
        raise RuntimeError("the disk is on fire")

    async def handle_failure(ctx: stepline.Context) -> str:
        calls["on_failure"] += 1
        failures.append({"name": ctx.event.name, "data": ctx.event.data})
        return "handled"

    @client.function(id="exhaust", trigger=stepline.on_event("test/exhaust"), retries=2, on_failure=handle_failure)
    async def exhaust(ctx: stepline.Context) -> None:
        await ctx.step.run("prepare", lambda: calls.update(["prepare"]))
        await ctx.step.run("doomed", doomed)

    async with TestEngine(client, [exhaust], database_url=database_url) as engine:
        run_id = await start(engine, "test/exhaust", {"order": 42})
        await engine.advance(BACKOFF)
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "the disk is on fire" in run.error["message"]
    assert calls == {"prepare": 1, "doomed": 3, "on_failure": 1}
    doomed_step = step_named(run, "doomed")
    assert doomed_step.attempts == 3
    assert doomed_step.error is not None
    assert "the disk is on fire" in doomed_step.error["message"]

    assert len(failures) == 1
    failure = failures[0]
    assert failure["name"] == "inngest/function.failed"
    assert "the disk is on fire" in failure["data"]["error"]["message"]
    assert failure["data"]["event"]["name"] == "test/exhaust"
    assert failure["data"]["event"]["data"] == {"order": 42}
    assert failure["data"]["run_id"] == run_id


async def test_sync_on_failure_handler_runs_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-exhaust-sync")
    messages: list[str] = []

    def handle_failure(ctx: stepline.ContextSync) -> None:
        messages.append(ctx.event.data["error"]["message"])

    @client.function(id="fails", trigger=stepline.on_event("test/fails"), retries=0, on_failure=handle_failure)
    def fails(ctx: stepline.ContextSync) -> None:
        ctx.step.run("boom", _raise_runtime, "sync boom")

    async with TestEngine(client, [fails], database_url=database_url) as engine:
        run_id = await start(engine, "test/fails")
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert len(messages) == 1
    assert "sync boom" in messages[0]


def _raise_runtime(message: str) -> None:
    raise RuntimeError(message)


async def test_retries_zero_means_one_attempt(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-zero")
    calls: Counter[str] = Counter()

    def once() -> None:
        calls["once"] += 1
        raise RuntimeError("no second chance")

    @client.function(id="zero", trigger=stepline.on_event("test/zero"), retries=0)
    async def zero(ctx: stepline.Context) -> None:
        await ctx.step.run("once", once)

    async with TestEngine(client, [zero], database_url=database_url) as engine:
        run_id = await start(engine, "test/zero")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)
        assert run.status is RunStatus.FAILED  # no backoff to wait for
        await engine.advance(BACKOFF)

    assert calls == {"once": 1}
    assert run.error is not None
    assert "no second chance" in run.error["message"]
    assert step_named(run, "once").attempts == 1


async def test_default_retries_is_four(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-default")
    calls: Counter[str] = Counter()

    def always() -> None:
        calls["always"] += 1
        raise RuntimeError("always")

    @client.function(id="default", trigger=stepline.on_event("test/default"))
    async def default(ctx: stepline.Context) -> None:
        await ctx.step.run("always", always)

    async with TestEngine(client, [default], database_url=database_url) as engine:
        run_id = await start(engine, "test/default")
        await engine.advance(timedelta(hours=1))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert calls == {"always": 5}


async def test_non_retriable_error_fails_at_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-nonretriable")
    calls: Counter[str] = Counter()

    def refuse() -> None:
        calls["refuse"] += 1
        raise stepline.NonRetriableError("invalid card number")

    @client.function(id="refuse", trigger=stepline.on_event("test/refuse"), retries=5)
    async def refuse_fn(ctx: stepline.Context) -> None:
        await ctx.step.run("refuse", refuse)

    async with TestEngine(client, [refuse_fn], database_url=database_url) as engine:
        run_id = await start(engine, "test/refuse")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)
        await engine.advance(BACKOFF)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "invalid card number" in run.error["message"]
    assert calls == {"refuse": 1}
    assert step_named(run, "refuse").attempts == 1


async def test_non_retriable_error_outside_steps_fails_at_once(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-nonretriable-body")
    calls: Counter[str] = Counter()

    @client.function(id="refuse-body", trigger=stepline.on_event("test/refuse-body"), retries=5)
    async def refuse_body(ctx: stepline.Context) -> None:
        calls["body"] += 1
        raise stepline.NonRetriableError("bad input, do not retry")

    async with TestEngine(client, [refuse_body], database_url=database_url) as engine:
        run_id = await start(engine, "test/refuse-body")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "bad input, do not retry" in run.error["message"]
    assert calls == {"body": 1}


async def test_retry_after_error_delays_the_retry(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-after")
    calls: Counter[str] = Counter()

    def rate_limited() -> str:
        calls["limited"] += 1
        if calls["limited"] == 1:
            raise stepline.RetryAfterError("slow down", timedelta(minutes=5))
        return "done"

    @client.function(id="after", trigger=stepline.on_event("test/after"), retries=3)
    async def after(ctx: stepline.Context) -> str:
        return await ctx.step.run("limited", rate_limited)

    async with TestEngine(client, [after], database_url=database_url) as engine:
        run_id = await start(engine, "test/after")
        await engine.run_until_idle()
        assert calls == {"limited": 1}
        await engine.advance(timedelta(minutes=1))
        assert calls == {"limited": 1}, "retried before the RetryAfterError delay"
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.advance(timedelta(minutes=5))  # 6 minutes in total
        run = await get_run(engine, run_id)

    assert calls == {"limited": 2}
    assert run.status is RunStatus.COMPLETED
    assert run.output == "done"


async def test_retry_after_error_outside_steps_delays_the_retry(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-after-body")
    calls: Counter[str] = Counter()

    @client.function(id="after-body", trigger=stepline.on_event("test/after-body"), retries=3)
    async def after_body(ctx: stepline.Context) -> str:
        calls["body"] += 1
        if calls["body"] == 1:
            raise stepline.RetryAfterError("come back later", timedelta(minutes=5))
        return "done"

    async with TestEngine(client, [after_body], database_url=database_url) as engine:
        run_id = await start(engine, "test/after-body")
        await engine.advance(timedelta(minutes=1))
        assert calls == {"body": 1}
        await engine.advance(timedelta(minutes=5))
        run = await get_run(engine, run_id)

    assert calls == {"body": 2}
    assert run.status is RunStatus.COMPLETED


async def test_catching_step_error_lets_the_function_complete(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-catch")
    calls: Counter[str] = Counter()

    def broken() -> str:
        calls["broken"] += 1
        raise RuntimeError("upstream is down")

    @client.function(id="catch", trigger=stepline.on_event("test/catch"), retries=1)
    async def catch(ctx: stepline.Context) -> dict[str, str]:
        try:
            value = await ctx.step.run("broken", broken)
        except stepline.StepError as exc:
            calls["caught"] += 1
            return {"fallback": exc.message, "step": exc.step_id}
        return {"value": value}

    async with TestEngine(client, [catch], database_url=database_url) as engine:
        run_id = await start(engine, "test/catch")
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"fallback": "upstream is down", "step": "broken"}
    assert calls["broken"] == 2
    assert calls["caught"] >= 1
    assert step_named(run, "broken").error is not None


async def test_exception_outside_steps_is_retried_then_fails(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-body")
    calls: Counter[str] = Counter()

    def setup() -> int:
        calls["setup"] += 1
        return 1

    @client.function(id="body", trigger=stepline.on_event("test/body"), retries=2)
    async def body(ctx: stepline.Context) -> None:
        await ctx.step.run("setup", setup)
        calls["raised"] += 1
        raise ValueError("bad state outside any step")

    async with TestEngine(client, [body], database_url=database_url) as engine:
        run_id = await start(engine, "test/body")
        await engine.run_until_idle()
        assert calls["raised"] == 1
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "bad state outside any step" in run.error["message"]
    assert calls == {"setup": 1, "raised": 3}


async def test_exception_outside_steps_then_success(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-body-ok")
    calls: Counter[str] = Counter()

    @client.function(id="body-ok", trigger=stepline.on_event("test/body-ok"), retries=2)
    def body(ctx: stepline.ContextSync) -> str:
        calls["body"] += 1
        if calls["body"] == 1:
            raise ConnectionError("transient")
        return "recovered"

    async with TestEngine(client, [body], database_url=database_url) as engine:
        run_id = await start(engine, "test/body-ok")
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "recovered"
    assert calls == {"body": 2}


def _per_step_function(client: stepline.Stepline, calls: Counter[str], attempts_seen: list[tuple[str, int]]) -> Any:
    def flaky(name: str, attempt: int) -> str:
        calls[name] += 1
        attempts_seen.append((name, attempt))
        if calls[name] == 1:
            raise RuntimeError(f"{name} fails on its first attempt")
        return name

    @client.function(id="per-step", trigger=stepline.on_event("test/per-step"), retries=1)
    async def per_step(ctx: stepline.Context) -> list[str]:
        a = await ctx.step.run("a", lambda: flaky("a", ctx.attempt))
        b = await ctx.step.run("b", lambda: flaky("b", ctx.attempt))
        c = await ctx.step.run("c", lambda: flaky("c", ctx.attempt))
        return [a, b, c]

    return per_step


@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no-checkpointing"])
async def test_each_step_gets_its_own_retries(database_url: str, checkpointing: bool) -> None:
    """retries=1 allows every step one retry: three steps that each fail once still complete."""
    client = stepline.Stepline(app_id="retry-per-step")
    calls: Counter[str] = Counter()
    attempts_seen: list[tuple[str, int]] = []
    fn = _per_step_function(client, calls, attempts_seen)

    async with TestEngine(client, [fn], database_url=database_url, checkpointing=checkpointing) as engine:
        run_id = await start(engine, "test/per-step")
        for _ in range(3):
            await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == ["a", "b", "c"]
    assert calls == {"a": 2, "b": 2, "c": 2}
    assert [step.attempts for step in run.steps] == [2, 2, 2]


@pytest.mark.parametrize(
    "checkpointing",
    [
        pytest.param(True, id="checkpointing"),
        pytest.param(False, id="no-checkpointing"),
    ],
)
async def test_ctx_attempt_resets_for_each_new_step(database_url: str, checkpointing: bool) -> None:
    client = stepline.Stepline(app_id="retry-ctx-attempt")
    calls: Counter[str] = Counter()
    attempts_seen: list[tuple[str, int]] = []
    fn = _per_step_function(client, calls, attempts_seen)

    async with TestEngine(client, [fn], database_url=database_url, checkpointing=checkpointing) as engine:
        await start(engine, "test/per-step")
        for _ in range(3):
            await engine.advance(BACKOFF)

    assert attempts_seen == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]


async def test_on_failure_runs_for_a_failure_outside_steps(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-body-failure")
    received: list[dict[str, Any]] = []

    def handle_failure(ctx: stepline.ContextSync) -> None:
        received.append(ctx.event.data)

    @client.function(
        id="body-fails", trigger=stepline.on_event("test/body-fails"), retries=1, on_failure=handle_failure
    )
    async def body_fails(ctx: stepline.Context) -> None:
        raise KeyError("missing-config")

    async with TestEngine(client, [body_fails], database_url=database_url) as engine:
        run_id = await start(engine, "test/body-fails", {"k": 1})
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert len(received) == 1
    assert "missing-config" in received[0]["error"]["message"]
    assert received[0]["event"]["data"] == {"k": 1}
    assert received[0]["function_id"] == "retry-body-failure-body-fails"


async def test_on_failure_does_not_run_for_a_completed_run(database_url: str) -> None:
    client = stepline.Stepline(app_id="retry-no-failure")
    calls: Counter[str] = Counter()

    async def handle_failure(ctx: stepline.Context) -> None:
        calls["on_failure"] += 1

    @client.function(id="ok", trigger=stepline.on_event("test/ok"), on_failure=handle_failure)
    async def ok(ctx: stepline.Context) -> str:
        return "ok"

    async with TestEngine(client, [ok], database_url=database_url) as engine:
        run_id = await start(engine, "test/ok")
        await engine.advance(BACKOFF)
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert calls == {}
