"""``step.invoke`` (child runs) and ``step.send_event`` (events sent from inside a run)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

import stepline
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_names


async def test_invoke_returns_the_child_output(database_url: str) -> None:
    client = stepline.Stepline(app_id="invoke-ok")
    calls: Counter[str] = Counter()

    @client.function(id="child", trigger=stepline.on_event("test/child.direct"))
    async def child(ctx: stepline.Context) -> dict[str, Any]:
        calls["child"] += 1
        doubled = await ctx.step.run("double", lambda: ctx.event.data["n"] * 2)
        return {"doubled": doubled}

    @client.function(id="parent", trigger=stepline.on_event("test/parent"))
    async def parent(ctx: stepline.Context) -> dict[str, Any]:
        result = await ctx.step.invoke("call-child", function=child, data={"n": ctx.event.data["n"]})
        after = await ctx.step.run("after", _count_and_return, calls, "after")
        return {"child": result, "after": after}

    async with TestEngine(client, [child, parent], database_url=database_url) as engine:
        run_id = await start(engine, "test/parent", {"n": 21})
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"child": {"doubled": 42}, "after": "after"}
    assert calls["after"] == 1
    assert calls["child"] >= 1
    assert run.steps[0].output == {"doubled": 42}


def _count_and_return(calls: Counter[str], name: str) -> str:
    calls[name] += 1
    return name


async def test_invoke_by_composite_id_from_sync_function(database_url: str) -> None:
    client = stepline.Stepline(app_id="invoke-sync")

    @client.function(id="child", trigger=stepline.on_event("test/child.sync"))
    def child(ctx: stepline.ContextSync) -> str:
        return str(ctx.event.data["word"]).upper()

    @client.function(id="parent", trigger=stepline.on_event("test/parent.sync"))
    def parent(ctx: stepline.ContextSync) -> Any:
        return ctx.step.invoke("call", function="invoke-sync-child", data={"word": "hi"})

    async with TestEngine(client, [child, parent], database_url=database_url) as engine:
        run_id = await start(engine, "test/parent.sync")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "HI"


async def test_invoke_of_a_failing_child_raises_step_error(database_url: str) -> None:
    client = stepline.Stepline(app_id="invoke-fail")
    calls: Counter[str] = Counter()

    @client.function(id="child", trigger=stepline.on_event("test/child.fail"), retries=1)
    async def child(ctx: stepline.Context) -> None:
        calls["child"] += 1
        await ctx.step.run("explode", _explode)

    @client.function(id="parent", trigger=stepline.on_event("test/parent.fail"))
    async def parent(ctx: stepline.Context) -> str:
        try:
            await ctx.step.invoke("call-child", function=child)
        except stepline.StepError as exc:
            return f"child failed: {exc.message}"
        return "child succeeded"

    async with TestEngine(client, [child, parent], database_url=database_url) as engine:
        run_id = await start(engine, "test/parent.fail")
        await engine.run_until_idle()
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING  # the child is retrying
        await engine.advance(timedelta(minutes=5))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == "child failed: child exploded"


def _explode() -> None:
    raise RuntimeError("child exploded")


async def test_invoke_of_an_unknown_function_raises_step_error_naming_it(database_url: str) -> None:
    client = stepline.Stepline(app_id="invoke-missing")

    @client.function(id="parent", trigger=stepline.on_event("test/parent.missing"))
    async def parent(ctx: stepline.Context) -> str:
        try:
            await ctx.step.invoke("call-ghost", function="invoke-missing-ghost")
        except stepline.StepError as exc:
            return exc.message
        return "no error"

    async with TestEngine(client, [parent], database_url=database_url) as engine:
        run_id = await start(engine, "test/parent.missing")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert isinstance(run.output, str)
    assert "invoke-missing-ghost" in run.output


async def test_invoke_times_out_with_step_error(database_url: str) -> None:
    client = stepline.Stepline(app_id="invoke-timeout")

    @client.function(id="slow-child", trigger=stepline.on_event("test/child.slow"))
    async def slow_child(ctx: stepline.Context) -> str:
        await ctx.step.sleep("long", timedelta(hours=5))
        return "too late"

    @client.function(id="parent", trigger=stepline.on_event("test/parent.timeout"))
    async def parent(ctx: stepline.Context) -> str:
        try:
            return str(await ctx.step.invoke("call", function=slow_child, timeout=timedelta(minutes=10)))
        except stepline.StepError as exc:
            return f"error: {exc.message}"

    async with TestEngine(client, [slow_child, parent], database_url=database_url) as engine:
        run_id = await start(engine, "test/parent.timeout")
        await engine.advance(timedelta(minutes=9))
        assert (await get_run(engine, run_id)).status is RunStatus.RUNNING
        await engine.advance(timedelta(minutes=2))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert isinstance(run.output, str)
    assert run.output.startswith("error: ")
    assert "timed out" in run.output.lower()


async def test_invoke_step_is_listed_under_its_name(database_url: str) -> None:
    client = stepline.Stepline(app_id="invoke-name")

    @client.function(id="child", trigger=stepline.on_event("test/child.name"))
    async def child(ctx: stepline.Context) -> int:
        return 1

    @client.function(id="parent", trigger=stepline.on_event("test/parent.name"))
    async def parent(ctx: stepline.Context) -> Any:
        return await ctx.step.invoke("call-child", function=child)

    async with TestEngine(client, [child, parent], database_url=database_url) as engine:
        run_id = await start(engine, "test/parent.name")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert step_names(run) == ["call-child"]


async def test_send_event_from_a_step_starts_the_target_once_despite_later_retries(database_url: str) -> None:
    client = stepline.Stepline(app_id="send-once")
    calls: Counter[str] = Counter()
    received: list[dict[str, Any]] = []

    @client.function(id="receiver", trigger=stepline.on_event("test/welcome"))
    async def receiver(ctx: stepline.Context) -> None:
        calls["receiver"] += 1
        received.append(ctx.event.data)

    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise RuntimeError("not yet")
        return "ok"

    @client.function(id="sender", trigger=stepline.on_event("test/signup"), retries=3)
    async def sender(ctx: stepline.Context) -> list[str]:
        ids = await ctx.step.send_event("send-welcome", stepline.Event("test/welcome", {"user": "u1"}))
        await ctx.step.run("flaky", flaky)
        return ids

    async with TestEngine(client, [receiver, sender], database_url=database_url) as engine:
        run_id = await start(engine, "test/signup")
        await engine.advance(timedelta(minutes=10))
        await engine.advance(timedelta(minutes=10))
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED
    assert calls == {"receiver": 1, "flaky": 3}
    assert received == [{"user": "u1"}]
    assert isinstance(run.output, list)
    assert len(run.output) == 1
    assert step_names(run) == ["send-welcome", "flaky"]


@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointing", "no-checkpointing"])
async def test_send_event_from_sync_function(database_url: str, checkpointing: bool) -> None:
    client = stepline.Stepline(app_id="send-sync")
    received: list[dict[str, Any]] = []

    @client.function(id="receiver", trigger=stepline.on_event("test/ping"))
    def receiver(ctx: stepline.ContextSync) -> None:
        received.append(ctx.event.data)

    @client.function(id="sender", trigger=stepline.on_event("test/go"))
    def sender(ctx: stepline.ContextSync) -> int:
        ids = ctx.step.send_event(
            "send-two", [stepline.Event("test/ping", {"n": 1}), stepline.Event("test/ping", {"n": 2})]
        )
        return len(ids)

    async with TestEngine(client, [receiver, sender], database_url=database_url, checkpointing=checkpointing) as e:
        run_id = await start(e, "test/go")
        await e.run_until_idle()
        run = await get_run(e, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == 2
    assert sorted(item["n"] for item in received) == [1, 2]


async def test_client_send_outside_a_step_reaches_the_engine(database_url: str) -> None:
    client = stepline.Stepline(app_id="send-client")
    received: list[dict[str, Any]] = []

    @client.function(id="receiver", trigger=stepline.on_event("test/direct"))
    async def receiver(ctx: stepline.Context) -> None:
        received.append(ctx.event.data)

    async with TestEngine(client, [receiver], database_url=database_url) as engine:
        ids = await client.send(stepline.Event("test/direct", {"via": "client"}))
        await engine.run_until_idle()

    assert len(ids) == 1
    assert received == [{"via": "client"}]


class _LateCopy(TestEngine):
    """An engine whose registry lacks ``hidden`` until it reads the functions again, as a server's
    does between a sync through another server and its own periodic reload."""

    def __init__(self, *args: Any, hidden: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hidden = hidden
        self._all: list[Any] = []
        self.reloads = 0

    async def start(self) -> None:
        await super().start()
        self._all = list(self.registry.functions.values())
        self.registry.replace(spec for spec in self._all if spec.id != self._hidden)

    async def _reload_functions(self) -> None:
        self.reloads += 1
        self.registry.replace(self._all)


async def test_an_invoke_of_a_function_the_registry_does_not_hold_yet_reads_it_again(database_url: str) -> None:
    client = stepline.Stepline(app_id="invoke-late")

    @client.function(id="child", trigger=stepline.on_event("test/child.late"))
    async def child(ctx: stepline.Context) -> str:
        return "from the child"

    @client.function(id="parent", trigger=stepline.on_event("test/parent.late"))
    async def parent(ctx: stepline.Context) -> Any:
        return await ctx.step.invoke("call", function=child, data={})

    async with _LateCopy(client, [child, parent], database_url=database_url, hidden="invoke-late-child") as engine:
        run_id = await start(engine, "test/parent.late")
        await engine.run_until_idle()
        run = await get_run(engine, run_id)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == "from the child"
    assert engine.reloads == 1
