"""Bad input gives clear errors: at definition time, at start, or as a failed run that says why."""

from __future__ import annotations

import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import FakeClock, TestEngine
from tests.engine.support import get_run, start, step_named


async def test_non_json_step_result_fails_the_run_and_the_executor_carries_on(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-json")
    calls: Counter[str] = Counter()

    def make_object() -> object:
        calls["make"] += 1
        return object()

    @client.function(id="bad", trigger=stepline.on_event("test/bad"), retries=3)
    async def bad(ctx: stepline.Context) -> Any:
        return await ctx.step.run("make-object", make_object)

    @client.function(id="good", trigger=stepline.on_event("test/good"))
    async def good(ctx: stepline.Context) -> str:
        return await ctx.step.run("fine", lambda: "fine")

    async with TestEngine(client, [bad, good], database_url=database_url) as engine:
        bad_id = await start(engine, "test/bad")
        await engine.advance(timedelta(minutes=10))
        bad_run = await get_run(engine, bad_id)
        good_id = await start(engine, "test/good")
        await engine.run_until_idle()
        good_run = await get_run(engine, good_id)

    assert bad_run.status is RunStatus.FAILED
    assert bad_run.error is not None
    message = bad_run.error["message"]
    assert "not JSON-serialisable" in message
    assert "make-object" in message
    assert calls == {"make": 1}  # a deterministic problem: not retried
    step_error = step_named(bad_run, "make-object").error
    assert step_error is not None
    assert "not JSON-serialisable" in step_error["message"]
    assert good_run.status is RunStatus.COMPLETED
    assert good_run.output == "fine"


async def test_non_json_function_result_fails_the_run(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-json-return")

    @client.function(id="bad-return", trigger=stepline.on_event("test/bad-return"))
    async def bad_return(ctx: stepline.Context) -> Any:
        return {"when": object()}

    async with TestEngine(client, [bad_return], database_url=database_url) as engine:
        run_id = await start(engine, "test/bad-return")
        await engine.advance(timedelta(minutes=10))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "not JSON-serialisable" in run.error["message"]


async def test_changing_step_ids_between_calls_fails_with_non_determinism(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-nondeterminism")
    calls: Counter[str] = Counter()

    @client.function(id="shifty", trigger=stepline.on_event("test/shifty"), retries=2)
    async def shifty(ctx: stepline.Context) -> str:
        calls["body"] += 1
        name = "first-name" if calls["body"] == 1 else "second-name"
        await ctx.step.run(name, lambda: calls.update([name]))
        await ctx.step.sleep("nap", timedelta(seconds=10))  # ends the call: the next call replays
        return "done"

    async with TestEngine(client, [shifty], database_url=database_url) as engine:
        run_id = await start(engine, "test/shifty")
        await engine.advance(timedelta(minutes=10))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "changed" in run.error["message"]
    assert run.error["name"] == "NonDeterminismError"
    assert calls["first-name"] == 1
    assert calls["second-name"] == 0


async def test_sync_function_changing_step_ids_fails_with_non_determinism(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-nondeterminism-sync")
    calls: Counter[str] = Counter()

    @client.function(id="shifty", trigger=stepline.on_event("test/shifty"), retries=2)
    def shifty(ctx: stepline.ContextSync) -> str:
        calls["body"] += 1
        ctx.step.run(f"step-{calls['body']}", lambda: None)
        ctx.step.sleep("nap", timedelta(seconds=10))
        return "done"

    async with TestEngine(client, [shifty], database_url=database_url) as engine:
        run_id = await start(engine, "test/shifty")
        await engine.advance(timedelta(minutes=10))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "changed" in run.error["message"]


async def test_dropping_recorded_steps_fails_at_once_with_non_determinism(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-nondeterminism-end")
    calls: Counter[str] = Counter()

    @client.function(id="shrinks", trigger=stepline.on_event("test/shrinks"), retries=3)
    async def shrinks(ctx: stepline.Context) -> str:
        calls["body"] += 1
        if calls["body"] == 1:  # only the first call has steps
            await ctx.step.run("first", lambda: 1)
            await ctx.step.sleep("nap", timedelta(seconds=10))
        return "done"

    async with TestEngine(client, [shrinks], database_url=database_url) as engine:
        run_id = await start(engine, "test/shrinks")
        await engine.advance(timedelta(hours=1))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "changed" in run.error["message"]
    assert calls == {"body": 2}, "a deterministic failure was retried"


def test_trigger_expression_that_does_not_compile_is_rejected_at_definition() -> None:
    with pytest.raises(stepline.ExpressionError, match="does not compile"):
        stepline.on_event("test/x", if_exp="1 +")


def test_empty_trigger_expression_is_rejected() -> None:
    with pytest.raises(stepline.ExpressionError):
        stepline.on_event("test/x", if_exp="   ")


async def test_wait_expression_that_does_not_compile_fails_the_step(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-wait-expression")
    seen: list[Any] = []

    @client.function(id="bad-wait", trigger=stepline.on_event("test/bad-wait"))
    async def bad_wait(ctx: stepline.Context) -> str:
        got = await ctx.step.wait_for_event("wait-bad", event="test/other", if_exp="((", timeout="1h")
        seen.append(got)
        return "returned from the wait"

    async with TestEngine(client, [bad_wait], database_url=database_url) as engine:
        run_id = await start(engine, "test/bad-wait")
        await engine.advance(timedelta(minutes=10))
        run = await get_run(engine, run_id)

    assert seen == []  # the function does not carry on past the broken wait
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "does not compile" in run.error["message"]
    assert "((" in run.error["message"]
    step_error = step_named(run, "wait-bad").error
    assert step_error is not None
    assert "does not compile" in step_error["message"]


async def test_wait_expression_that_does_not_compile_raises_step_error_to_catch(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-wait-expression-catch")

    @client.function(id="bad-wait", trigger=stepline.on_event("test/bad-wait"))
    def bad_wait(ctx: stepline.ContextSync) -> str:
        try:
            ctx.step.wait_for_event("wait-bad", event="test/other", if_exp="((")
        except stepline.StepError as exc:
            return exc.message
        return "no error"

    async with TestEngine(client, [bad_wait], database_url=database_url) as engine:
        run_id = await start(engine, "test/bad-wait")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert isinstance(run.output, str)
    assert "does not compile" in run.output


@pytest.mark.parametrize("retries", [21, -1, 1.5, True, "3"])
def test_invalid_retries_are_rejected(retries: Any) -> None:
    client = stepline.Stepline(app_id="bad-retries")
    with pytest.raises(stepline.ConfigurationError, match="retries must be an integer from 0 to 20"):
        client.function(id="f", trigger=stepline.on_event("test/x"), retries=retries)


@pytest.mark.parametrize("retries", [0, 20])
def test_retries_bounds_are_accepted(retries: int) -> None:
    client = stepline.Stepline(app_id="ok-retries")

    @client.function(id="f", trigger=stepline.on_event("test/x"), retries=retries)
    async def f(ctx: stepline.Context) -> None:
        return None

    assert f.retries == retries


@pytest.mark.parametrize("schedule", ["not a cron", "* * *", "61 * * * *", ""])
def test_invalid_cron_is_rejected(schedule: str) -> None:
    with pytest.raises(stepline.ConfigurationError, match="cron"):
        stepline.on_cron(schedule)


def test_two_cron_triggers_are_rejected_where_the_function_is_defined() -> None:
    client = stepline.Stepline(app_id="bad-two-crons")
    with pytest.raises(stepline.ConfigurationError, match="2 cron triggers"):
        client.function(id="f", triggers=[stepline.on_cron("0 * * * *"), stepline.on_cron("30 * * * *")])


def test_unknown_cron_time_zone_is_rejected() -> None:
    with pytest.raises(stepline.ConfigurationError, match="Mars/Olympus"):
        stepline.on_cron("0 * * * *", tz="Mars/Olympus")


def test_engine_rejects_an_undecorated_function() -> None:
    client = stepline.Stepline(app_id="bad-undecorated")

    async def plain(ctx: stepline.Context) -> None:
        return None

    with pytest.raises(stepline.ConfigurationError, match=r"@client\.function"):
        stepline.Engine(client, functions=[plain])


def test_engine_rejects_a_function_of_another_app() -> None:
    client = stepline.Stepline(app_id="bad-app-a")
    other = stepline.Stepline(app_id="bad-app-b")

    @other.function(id="f", trigger=stepline.on_event("test/x"))
    async def f(ctx: stepline.Context) -> None:
        return None

    with pytest.raises(stepline.ConfigurationError, match="bad-app-b"):
        stepline.Engine(client, functions=[f])


def test_engine_rejects_two_functions_with_one_id() -> None:
    client = stepline.Stepline(app_id="bad-dup")

    @client.function(id="f", trigger=stepline.on_event("test/x"))
    async def f1(ctx: stepline.Context) -> None:
        return None

    @client.function(id="f", trigger=stepline.on_event("test/y"))
    async def f2(ctx: stepline.Context) -> None:
        return None

    with pytest.raises(stepline.ConfigurationError, match="bad-dup-f"):
        stepline.Engine(client, functions=[f1, f2])


def test_invalid_ids_are_rejected() -> None:
    with pytest.raises(stepline.ConfigurationError, match="invalid app id"):
        stepline.Stepline(app_id="has space")
    client = stepline.Stepline(app_id="ok")
    with pytest.raises(stepline.ConfigurationError, match="invalid function id"):
        client.function(id="", trigger=stepline.on_event("test/x"))


async def test_unsupported_database_url_fails_on_start() -> None:
    client = stepline.Stepline(app_id="bad-url")

    @client.function(id="f", trigger=stepline.on_event("test/x"))
    async def f(ctx: stepline.Context) -> None:
        return None

    engine = TestEngine(client, [f], database_url="mysql://x")
    with pytest.raises(stepline.ConfigurationError, match="mysql://x"):
        await engine.start()
    with pytest.raises(stepline.ConfigurationError, match="not started"):
        await engine.run_until_idle()


async def test_wait_for_run_of_an_unknown_run_raises(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-run-id")

    @client.function(id="f", trigger=stepline.on_event("test/x"))
    async def f(ctx: stepline.Context) -> None:
        return None

    async with TestEngine(client, [f], database_url=database_url) as engine:
        with pytest.raises(stepline.RunNotFoundError, match="nope"):
            await engine.wait_for_run("nope")
        assert await engine.get_run("nope") is None


async def test_wait_for_run_of_a_sleeping_run_says_to_advance_the_clock(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-wait-sleeping")

    @client.function(id="f", trigger=stepline.on_event("test/x"))
    async def f(ctx: stepline.Context) -> None:
        await ctx.step.sleep("s", timedelta(days=1))

    async with TestEngine(client, [f], database_url=database_url) as engine:
        run_id = await start(engine, "test/x")
        with pytest.raises(stepline.RunTimeoutError, match="advance the clock"):
            await engine.wait_for_run(run_id)


async def test_sending_an_internal_or_empty_event_name_is_rejected(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-event-name")

    @client.function(id="f", trigger=stepline.on_event("test/x"))
    async def f(ctx: stepline.Context) -> None:
        return None

    async with TestEngine(client, [f], database_url=database_url) as engine:
        with pytest.raises(stepline.ConfigurationError, match="reserved"):
            await engine.send(stepline.Event("inngest/function.failed"))
        with pytest.raises(stepline.ConfigurationError, match="non-empty"):
            await engine.send(stepline.Event(""))


async def test_client_send_without_an_engine_says_what_to_do() -> None:
    client = stepline.Stepline(app_id="bad-no-engine")
    with pytest.raises(stepline.ConfigurationError, match=r"start a stepline\.Engine"):
        await client.send(stepline.Event("test/x"))


async def test_empty_step_id_fails_the_run_clearly(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-step-id")

    @client.function(id="f", trigger=stepline.on_event("test/x"), retries=3)
    async def f(ctx: stepline.Context) -> None:
        await ctx.step.run("", lambda: None)

    async with TestEngine(client, [f], database_url=database_url) as engine:
        run_id = await start(engine, "test/x")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "step id must be a non-empty string" in run.error["message"]


@pytest.mark.parametrize("value", [float("nan"), "nul\x00byte"], ids=["nan", "nul-char"])
@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no-checkpointing"])
async def test_step_value_the_database_rejects_still_ends_the_run(
    database_url: str, checkpointing: bool, value: Any
) -> None:
    """Whatever the backend thinks of a value, the step runs once (retries=0) and the run ends."""
    client = stepline.Stepline(app_id="bad-unstorable")
    calls: Counter[str] = Counter()

    def produce() -> Any:
        calls["produce"] += 1
        return value

    @client.function(id="unstorable", trigger=stepline.on_event("test/unstorable"), retries=0)
    async def unstorable(ctx: stepline.Context) -> str:
        return repr(await ctx.step.run("produce", produce))

    async with TestEngine(client, [unstorable], database_url=database_url, checkpointing=checkpointing) as engine:
        run_id = await start(engine, "test/unstorable")
        await engine.advance(timedelta(minutes=5))  # ten lease periods
        run = await get_run(engine, run_id)

    assert calls == {"produce": 1}
    assert run.status.is_terminal, f"run still {run.status.value} after the step ran {calls['produce']} times"


@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no-checkpointing"])
async def test_step_returning_nan_fails_as_not_json_serialisable(database_url: str, checkpointing: bool) -> None:
    client = stepline.Stepline(app_id="bad-nan")

    @client.function(id="nan", trigger=stepline.on_event("test/nan"), retries=0)
    async def nan(ctx: stepline.Context) -> Any:
        return await ctx.step.run("ratio", lambda: float("nan"))

    async with TestEngine(client, [nan], database_url=database_url, checkpointing=checkpointing) as engine:
        run_id = await start(engine, "test/nan")
        await engine.advance(timedelta(minutes=1))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "not JSON-serialisable" in run.error["message"]
    assert "ratio" in run.error["message"]


async def test_event_data_with_nan_is_rejected_at_send(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-event-nan")

    @client.function(id="f", trigger=stepline.on_event("test/x"))
    async def f(ctx: stepline.Context) -> None:
        return None

    async with TestEngine(client, [f], database_url=database_url) as engine:
        with pytest.raises(stepline.SerializationError, match="not JSON-serialisable"):
            await engine.send(stepline.Event("test/x", {"score": float("nan")}))


async def test_nul_characters_are_refused_clearly_on_both_backends(database_url: str) -> None:
    """PostgreSQL cannot store U+0000 in JSON, so both backends refuse it with the same clear error."""
    client = stepline.Stepline(app_id="bad-nul")

    @client.function(id="nul", trigger=stepline.on_event("test/nul"), retries=0)
    async def nul(ctx: stepline.Context) -> str:
        return str(await ctx.step.run("echo", lambda: "a\x00b"))

    async with TestEngine(client, [nul], database_url=database_url) as engine:
        with pytest.raises(stepline.SerializationError, match="NUL character"):
            await engine.send(stepline.Event("test/nul", {"text": "a\x00b"}))
        run_id = await start(engine, "test/nul", {"text": "literal \\u0000 is fine"})
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "NUL character" in run.error["message"]
    assert "echo" in run.error["message"]


async def test_run_of_a_function_no_longer_registered_fails_clearly(database_url: str) -> None:
    client = stepline.Stepline(app_id="bad-unregistered")

    @client.function(id="gone", trigger=stepline.on_event("test/gone"))
    async def gone(ctx: stepline.Context) -> str:
        await ctx.step.sleep("nap", timedelta(minutes=1))
        return "back"

    @client.function(id="stays", trigger=stepline.on_event("test/stays"))
    async def stays(ctx: stepline.Context) -> str:
        return "here"

    clock = FakeClock()
    async with TestEngine(client, [gone, stays], database_url=database_url, clock=clock) as engine:
        run_id = await start(engine, "test/gone")
        await engine.run_until_idle()
    async with TestEngine(client, [stays], database_url=database_url, clock=clock) as engine:
        await engine.advance(timedelta(minutes=5))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "bad-unregistered-gone" in run.error["message"]
    assert "register" in run.error["message"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("x.db?mode=ro", "no options after '?'"), ("sub/", "names a folder"), ("", "names a folder")],
)
async def test_a_sqlite_url_naming_no_file_is_refused_before_anything_is_created(
    tmp_path: Path, name: str, reason: str
) -> None:
    client = stepline.Stepline(app_id="bad-sqlite-url")
    with pytest.raises(stepline.ConfigurationError, match=reason):
        async with stepline.Engine(client, functions=[], database_url=f"sqlite:///{tmp_path}/{name}"):
            pass

    assert not os.listdir(tmp_path)
