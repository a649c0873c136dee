"""The end-to-end scenarios as Stepline functions, each in an ``async def`` and a plain ``def`` flavour.

``make_functions(client)`` returns them for one app; every adapter app serves the same set.
Function ids end in ``-async`` or ``-sync``; trigger events are ``<prefix>/<flavour>/<scenario>``
(``E2E_EVENT_PREFIX``, the adapter's name by default). As in ``inngest_app``, behaviour comes
from the event's data and every step execution is logged to the side log (``E2E_STEP_LOG``).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from typing import Any

import stepline
from stepline.sdk.triggers import EventTrigger
from tests.e2e.steplog import StepLog, wait_for_steps

LOG = StepLog()
FLAVOURS = ("async", "sync")
SQUARES = {"square-1", "square-2", "square-3"}


def _token(ctx: stepline.Context | stepline.ContextSync) -> str:
    return str(ctx.event.data.get("token", ""))


def _number(ctx: stepline.Context | stepline.ContextSync, key: str, default: float = 0) -> float:
    value = ctx.event.data.get(key, default)
    return float(value) if isinstance(value, int | float) else default


def _log(ctx: stepline.Context | stepline.ContextSync, fn: str, step: str, note: str | None = None) -> int:
    return LOG.start(ctx.run_id, fn, step, _token(ctx), ctx.attempt, note)


def make_functions(client: stepline.Stepline, prefix: str | None = None) -> list[stepline.Function]:
    prefix = prefix or os.environ.get("E2E_EVENT_PREFIX") or client.app_id
    return [
        *_async_functions(client, f"{prefix}/async"),
        *_sync_functions(client, f"{prefix}/sync"),
        *_flow_functions(client, f"{prefix}/flow"),
    ]


def _flow_functions(client: stepline.Stepline, events: str) -> list[stepline.Function]:
    """Flow control configured through Stepline's SDK (keys are the event's token)."""

    @client.function(
        id="flow-batched",
        trigger=stepline.on_event(f"{events}/batch"),
        batch_events=stepline.Batch(max_size=3, timeout="2s", key="event.data.token"),
    )
    async def batched(ctx: stepline.Context) -> dict[str, Any]:
        return {"numbers": [event.data.get("n") for event in ctx.events]}

    @client.function(
        id="flow-rate-limited",
        trigger=stepline.on_event(f"{events}/rate"),
        rate_limit=stepline.RateLimit(limit=1, period=timedelta(hours=1), key="event.data.token"),
    )
    def rate_limited(ctx: stepline.ContextSync) -> dict[str, Any]:
        return {"n": ctx.event.data.get("n")}

    @client.function(
        id="flow-cancellable",
        trigger=stepline.on_event(f"{events}/cancellable"),
        cancel_on=[stepline.CancelOn(event=f"{events}/cancel-job", if_exp="async.data.token == event.data.token")],
    )
    async def cancellable(ctx: stepline.Context) -> None:
        async def mark(step: str) -> None:
            LOG.end(_log(ctx, "flow-cancellable", step))

        await ctx.step.run("start", mark, "start")
        await ctx.step.sleep("hold", timedelta(seconds=30))
        await ctx.step.run("never", mark, "never")

    return [batched, rate_limited, cancellable]


def _async_functions(client: stepline.Stepline, events: str) -> list[stepline.Function]:  # noqa: C901
    def on(name: str) -> EventTrigger:
        return stepline.on_event(f"{events}/{name}")

    async def logged(ctx: stepline.Context, fn: str, step: str, value: Any, seconds: float = 0.0) -> Any:
        row = _log(ctx, fn, step)
        if seconds:
            await asyncio.sleep(seconds)
        LOG.end(row)
        return value

    @client.function(id="steps-async", trigger=on("steps"))
    async def steps(ctx: stepline.Context) -> dict[str, Any]:
        n = int(_number(ctx, "n", 1))
        doubled: int = await ctx.step.run("double", logged, ctx, "steps", "double", n * 2)

        async def add(value: int, extra: int) -> int:
            result: int = await logged(ctx, "steps", "add", value + extra)
            return result

        added = await ctx.step.run("add", add, doubled, 1)
        return {"doubled": doubled, "added": added, "token": _token(ctx)}

    @client.function(id="parallel-async", trigger=on("parallel"))
    async def parallel(ctx: stepline.Context) -> dict[str, Any]:
        async def meet(k: int) -> int:
            row = _log(ctx, "parallel", f"square-{k}")
            await asyncio.to_thread(wait_for_steps, LOG, ctx.run_id, SQUARES, 10)
            LOG.end(row)
            return k * k

        def square(k: int) -> Any:
            return lambda: ctx.step.run(f"square-{k}", meet, k)

        squares = await ctx.step.parallel(*(square(k) for k in range(1, 4)))
        total = await ctx.step.run("total", logged, ctx, "parallel", "total", sum(squares))
        return {"squares": list(squares), "total": total}

    @client.function(id="sleeper-async", trigger=on("sleep"))
    async def sleeper(ctx: stepline.Context) -> dict[str, Any]:
        before = await ctx.step.run("before", logged, ctx, "sleeper", "before", time.time())
        await ctx.step.sleep("nap", timedelta(seconds=_number(ctx, "seconds", 1)))
        after = await ctx.step.run("after", logged, ctx, "sleeper", "after", time.time())
        return {"slept": after - before}

    @client.function(id="waiter-async", trigger=on("wait"))
    async def waiter(ctx: stepline.Context) -> dict[str, Any]:
        approval = await ctx.step.wait_for_event(
            "approval",
            event=f"{events}/approve",
            if_exp="async.data.key == event.data.key",
            timeout=timedelta(seconds=_number(ctx, "timeout", 30)),
        )
        if approval is None:
            return {"approved": False}
        return {"approved": True, "by": approval.data.get("by"), "key": approval.data.get("key")}

    @client.function(id="child-async", trigger=on("child"))
    async def child(ctx: stepline.Context) -> dict[str, Any]:
        if ctx.event.data.get("fail"):
            raise stepline.NonRetriableError("the child refuses")
        tripled = await ctx.step.run("triple", logged, ctx, "child", "triple", int(_number(ctx, "x")) * 3)
        return {"tripled": tripled}

    @client.function(id="invoker-async", trigger=on("invoke"))
    async def invoker(ctx: stepline.Context) -> dict[str, Any]:
        data: dict[str, Any] = {"x": int(_number(ctx, "x")), "token": _token(ctx), "fail": ctx.event.data.get("fail")}
        target = ctx.event.data.get("target")
        try:
            result = await ctx.step.invoke("call-child", function=str(target) if target else child, data=data)
        except stepline.StepError as exc:
            return {"child_failed": True, "message": exc.message}
        return {"child": result}

    @client.function(id="sender-async", trigger=on("send"))
    async def sender(ctx: stepline.Context) -> dict[str, Any]:
        event = stepline.Event(name=f"{events}/received", data={"token": _token(ctx), "from": ctx.run_id})
        return {"sent": await ctx.step.send_event("emit", event)}

    @client.function(id="receiver-async", trigger=on("received"))
    async def receiver(ctx: stepline.Context) -> dict[str, Any]:
        sent_by = await ctx.step.run("note", logged, ctx, "receiver", "note", ctx.event.data.get("from"))
        return {"from": sent_by, "token": _token(ctx)}

    async def handle_failure(ctx: stepline.Context) -> dict[str, Any]:
        original = ctx.event.data.get("event") or {}
        error = ctx.event.data.get("error") or {}
        message = error.get("message")
        row = LOG.start(ctx.run_id, "failing-handler", "on-failure", str(original.get("data", {}).get("token", "")), 0)
        LOG.end(row)
        return {"handled": ctx.event.name, "failed_run": ctx.event.data.get("run_id"), "message": message}

    @client.function(id="failing-async", trigger=on("fail"), retries=1, on_failure=handle_failure)
    async def failing(ctx: stepline.Context) -> None:
        async def boom() -> None:
            await logged(ctx, "failing", "boom", None)
            raise ValueError(f"boom {_token(ctx)}")

        await ctx.step.run("boom", boom)

    @client.function(id="non-retriable-async", trigger=on("non-retriable"), retries=3)
    async def non_retriable(ctx: stepline.Context) -> None:
        async def refuse() -> None:
            await logged(ctx, "non-retriable", "refuse", None)
            raise stepline.NonRetriableError("no point retrying")

        await ctx.step.run("refuse", refuse)

    @client.function(id="retry-after-async", trigger=on("retry-after"), retries=3)
    async def retry_after(ctx: stepline.Context) -> dict[str, Any]:
        async def limited() -> str:
            await logged(ctx, "retry-after", "limited", None)
            if LOG.count(ctx.run_id, "limited") == 1:
                raise stepline.RetryAfterError("rate limited", timedelta(seconds=_number(ctx, "delay", 2)))
            return "through"

        return {"result": await ctx.step.run("limited", limited)}

    @client.function(id="flaky-async", trigger=on("flaky"), retries=3)
    async def flaky(ctx: stepline.Context) -> dict[str, Any]:
        async def wobbly() -> str:
            await logged(ctx, "flaky", "wobbly", None)
            executions = LOG.count(ctx.run_id, "wobbly")
            if executions <= _number(ctx, "failures", 2):
                raise RuntimeError(f"wobble {executions}")
            return f"steady after {executions}"

        return {"result": await ctx.step.run("wobbly", wobbly)}

    @client.function(id="long-sleep-async", trigger=on("long-sleep"))
    async def long_sleep(ctx: stepline.Context) -> str:
        await ctx.step.run("start", logged, ctx, "long-sleep", "start", "started")
        await ctx.step.sleep("long", timedelta(minutes=10))
        await ctx.step.run("never", logged, ctx, "long-sleep", "never", "woke")
        return "woke"

    @client.function(id="slow-async", trigger=on("slow"), retries=10)
    async def slow(ctx: stepline.Context) -> dict[str, Any]:
        async def slow_step() -> str:
            row = _log(ctx, "slow", "slow")
            if LOG.count(ctx.run_id, "slow") == 1:
                await asyncio.sleep(_number(ctx, "seconds", 3))
            LOG.end(row)
            return "slow-done"

        first = await ctx.step.run("first", logged, ctx, "slow", "first", "first-done")
        second = await ctx.step.run("slow", slow_step)
        await ctx.step.sleep("nap", timedelta(seconds=_number(ctx, "nap", 1)))
        last = await ctx.step.run("last", logged, ctx, "slow", "last", "last-done")
        return {"first": first, "slow": second, "last": last}

    return [
        steps,
        parallel,
        sleeper,
        waiter,
        child,
        invoker,
        sender,
        receiver,
        failing,
        non_retriable,
        retry_after,
        flaky,
        long_sleep,
        slow,
    ]


def _sync_functions(client: stepline.Stepline, events: str) -> list[stepline.Function]:  # noqa: C901
    def on(name: str) -> EventTrigger:
        return stepline.on_event(f"{events}/{name}")

    def logged(ctx: stepline.ContextSync, fn: str, step: str, value: Any, seconds: float = 0.0) -> Any:
        row = _log(ctx, fn, step)
        if seconds:
            time.sleep(seconds)
        LOG.end(row)
        return value

    @client.function(id="steps-sync", trigger=on("steps"))
    def steps(ctx: stepline.ContextSync) -> dict[str, Any]:
        n = int(_number(ctx, "n", 1))
        doubled: int = ctx.step.run("double", logged, ctx, "steps", "double", n * 2)

        def add(value: int, extra: int) -> int:
            result: int = logged(ctx, "steps", "add", value + extra)
            return result

        added = ctx.step.run("add", add, doubled, 1)
        return {"doubled": doubled, "added": added, "token": _token(ctx)}

    @client.function(id="parallel-sync", trigger=on("parallel"))
    def parallel(ctx: stepline.ContextSync) -> dict[str, Any]:
        def meet(k: int) -> int:
            row = _log(ctx, "parallel", f"square-{k}")
            wait_for_steps(LOG, ctx.run_id, SQUARES, 10)
            LOG.end(row)
            return k * k

        def square(k: int) -> Any:
            return lambda: ctx.step.run(f"square-{k}", meet, k)

        squares = ctx.step.parallel(*(square(k) for k in range(1, 4)))
        total = ctx.step.run("total", logged, ctx, "parallel", "total", sum(squares))
        return {"squares": list(squares), "total": total}

    @client.function(id="sleeper-sync", trigger=on("sleep"))
    def sleeper(ctx: stepline.ContextSync) -> dict[str, Any]:
        before = ctx.step.run("before", logged, ctx, "sleeper", "before", time.time())
        ctx.step.sleep("nap", timedelta(seconds=_number(ctx, "seconds", 1)))
        after = ctx.step.run("after", logged, ctx, "sleeper", "after", time.time())
        return {"slept": after - before}

    @client.function(id="waiter-sync", trigger=on("wait"))
    def waiter(ctx: stepline.ContextSync) -> dict[str, Any]:
        approval = ctx.step.wait_for_event(
            "approval",
            event=f"{events}/approve",
            if_exp="async.data.key == event.data.key",
            timeout=timedelta(seconds=_number(ctx, "timeout", 30)),
        )
        if approval is None:
            return {"approved": False}
        return {"approved": True, "by": approval.data.get("by"), "key": approval.data.get("key")}

    @client.function(id="child-sync", trigger=on("child"))
    def child(ctx: stepline.ContextSync) -> dict[str, Any]:
        if ctx.event.data.get("fail"):
            raise stepline.NonRetriableError("the child refuses")
        tripled = ctx.step.run("triple", logged, ctx, "child", "triple", int(_number(ctx, "x")) * 3)
        return {"tripled": tripled}

    @client.function(id="invoker-sync", trigger=on("invoke"))
    def invoker(ctx: stepline.ContextSync) -> dict[str, Any]:
        data: dict[str, Any] = {"x": int(_number(ctx, "x")), "token": _token(ctx), "fail": ctx.event.data.get("fail")}
        target = ctx.event.data.get("target")
        try:
            result = ctx.step.invoke("call-child", function=str(target) if target else child, data=data)
        except stepline.StepError as exc:
            return {"child_failed": True, "message": exc.message}
        return {"child": result}

    @client.function(id="sender-sync", trigger=on("send"))
    def sender(ctx: stepline.ContextSync) -> dict[str, Any]:
        event = stepline.Event(name=f"{events}/received", data={"token": _token(ctx), "from": ctx.run_id})
        return {"sent": ctx.step.send_event("emit", event)}

    @client.function(id="receiver-sync", trigger=on("received"))
    def receiver(ctx: stepline.ContextSync) -> dict[str, Any]:
        sent_by = ctx.step.run("note", logged, ctx, "receiver", "note", ctx.event.data.get("from"))
        return {"from": sent_by, "token": _token(ctx)}

    def handle_failure(ctx: stepline.ContextSync) -> dict[str, Any]:
        original = ctx.event.data.get("event") or {}
        error = ctx.event.data.get("error") or {}
        message = error.get("message")
        row = LOG.start(ctx.run_id, "failing-handler", "on-failure", str(original.get("data", {}).get("token", "")), 0)
        LOG.end(row)
        return {"handled": ctx.event.name, "failed_run": ctx.event.data.get("run_id"), "message": message}

    @client.function(id="failing-sync", trigger=on("fail"), retries=1, on_failure=handle_failure)
    def failing(ctx: stepline.ContextSync) -> None:
        def boom() -> None:
            logged(ctx, "failing", "boom", None)
            raise ValueError(f"boom {_token(ctx)}")

        ctx.step.run("boom", boom)

    @client.function(id="non-retriable-sync", trigger=on("non-retriable"), retries=3)
    def non_retriable(ctx: stepline.ContextSync) -> None:
        def refuse() -> None:
            logged(ctx, "non-retriable", "refuse", None)
            raise stepline.NonRetriableError("no point retrying")

        ctx.step.run("refuse", refuse)

    @client.function(id="retry-after-sync", trigger=on("retry-after"), retries=3)
    def retry_after(ctx: stepline.ContextSync) -> dict[str, Any]:
        def limited() -> str:
            logged(ctx, "retry-after", "limited", None)
            if LOG.count(ctx.run_id, "limited") == 1:
                raise stepline.RetryAfterError("rate limited", timedelta(seconds=_number(ctx, "delay", 2)))
            return "through"

        return {"result": ctx.step.run("limited", limited)}

    @client.function(id="flaky-sync", trigger=on("flaky"), retries=3)
    def flaky(ctx: stepline.ContextSync) -> dict[str, Any]:
        def wobbly() -> str:
            logged(ctx, "flaky", "wobbly", None)
            executions = LOG.count(ctx.run_id, "wobbly")
            if executions <= _number(ctx, "failures", 2):
                raise RuntimeError(f"wobble {executions}")
            return f"steady after {executions}"

        return {"result": ctx.step.run("wobbly", wobbly)}

    @client.function(id="long-sleep-sync", trigger=on("long-sleep"))
    def long_sleep(ctx: stepline.ContextSync) -> str:
        ctx.step.run("start", logged, ctx, "long-sleep", "start", "started")
        ctx.step.sleep("long", timedelta(minutes=10))
        ctx.step.run("never", logged, ctx, "long-sleep", "never", "woke")
        return "woke"

    @client.function(id="slow-sync", trigger=on("slow"), retries=10)
    def slow(ctx: stepline.ContextSync) -> dict[str, Any]:
        def slow_step() -> str:
            row = _log(ctx, "slow", "slow")
            if LOG.count(ctx.run_id, "slow") == 1:
                time.sleep(_number(ctx, "seconds", 3))
            LOG.end(row)
            return "slow-done"

        first = ctx.step.run("first", logged, ctx, "slow", "first", "first-done")
        second = ctx.step.run("slow", slow_step)
        ctx.step.sleep("nap", timedelta(seconds=_number(ctx, "nap", 1)))
        last = ctx.step.run("last", logged, ctx, "slow", "last", "last-done")
        return {"first": first, "slow": second, "last": last}

    return [
        steps,
        parallel,
        sleeper,
        waiter,
        child,
        invoker,
        sender,
        receiver,
        failing,
        non_retriable,
        retry_after,
        flaky,
        long_sleep,
        slow,
    ]
