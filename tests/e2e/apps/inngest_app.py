"""An app written only with the PyPI ``inngest`` package (0.5.19), served by FastAPI on uvicorn.

``uvicorn tests.e2e.apps.inngest_app:app``. Configuration comes from the environment as for
any Inngest app: ``INNGEST_DEV`` (dev mode when truthy), ``INNGEST_SIGNING_KEY``,
``INNGEST_EVENT_KEY`` and ``INNGEST_BASE_URL`` (the Stepline server). ``E2E_APP_ID`` names
the app and ``E2E_STEP_LOG`` is the side log of step executions (``tests.e2e.steplog``).

Every function takes its behaviour from the event's data; ``data.token`` is written to the
side log with each execution, so a test can find the runs that functions started themselves.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api

from tests.e2e.steplog import StepLog, wait_for_steps

APP_ID = os.environ.get("E2E_APP_ID", "e2e-inngest")
PREFIX = os.environ.get("E2E_EVENT_PREFIX", "e2e")
DEV = os.environ.get("INNGEST_DEV", "").strip().lower() not in ("", "0", "false")
BASE_URL = os.environ["INNGEST_BASE_URL"]

client = inngest.Inngest(
    app_id=APP_ID,
    is_production=not DEV,
    signing_key=os.environ.get("INNGEST_SIGNING_KEY") or None,
    event_key=os.environ.get("INNGEST_EVENT_KEY") or None,
    api_base_url=BASE_URL,
    event_api_base_url=BASE_URL,
)
LOG = StepLog()


def _token(ctx: inngest.Context | inngest.ContextSync) -> str:
    return str(ctx.event.data.get("token", ""))


def _number(ctx: inngest.Context | inngest.ContextSync, key: str, default: float = 0) -> float:
    value = ctx.event.data.get(key, default)
    return float(value) if isinstance(value, int | float) else default


async def _logged(ctx: inngest.Context, fn: str, step: str, value: Any, seconds: float = 0.0) -> Any:
    row = LOG.start(ctx.run_id, fn, step, _token(ctx), ctx.attempt)
    if seconds:
        await asyncio.sleep(seconds)
    LOG.end(row)
    return value


# step.run, async and sync
@client.create_function(fn_id="steps", trigger=inngest.TriggerEvent(event=f"{PREFIX}/steps"))
async def steps(ctx: inngest.Context) -> dict[str, Any]:
    n = int(_number(ctx, "n", 1))

    async def double() -> int:
        result: int = await _logged(ctx, "steps", "double", n * 2)
        return result

    async def add(value: int, extra: int) -> int:
        result: int = await _logged(ctx, "steps", "add", value + extra)
        return result

    doubled = await ctx.step.run("double", double)
    added = await ctx.step.run("add", add, doubled, 1)
    return {"doubled": doubled, "added": added, "token": _token(ctx)}


@client.create_function(fn_id="steps-sync", trigger=inngest.TriggerEvent(event=f"{PREFIX}/steps-sync"))
def steps_sync(ctx: inngest.ContextSync) -> dict[str, Any]:
    n = int(_number(ctx, "n", 1))

    def double() -> int:
        row = LOG.start(ctx.run_id, "steps-sync", "double", _token(ctx), ctx.attempt)
        LOG.end(row)
        return n * 2

    def add(value: int, extra: int) -> int:
        row = LOG.start(ctx.run_id, "steps-sync", "add", _token(ctx), ctx.attempt)
        LOG.end(row)
        return value + extra

    doubled = ctx.step.run("double", double)
    added = ctx.step.run("add", add, doubled, 1)
    return {"doubled": doubled, "added": added, "token": _token(ctx)}


# group.parallel
@client.create_function(fn_id="parallel", trigger=inngest.TriggerEvent(event=f"{PREFIX}/parallel"))
async def parallel(ctx: inngest.Context) -> dict[str, Any]:
    async def square(k: int) -> int:
        # Each square waits for the other two to start: they must be in flight together.
        row = LOG.start(ctx.run_id, "parallel", f"square-{k}", _token(ctx), ctx.attempt)
        await asyncio.to_thread(wait_for_steps, LOG, ctx.run_id, {"square-1", "square-2", "square-3"}, 10)
        LOG.end(row)
        return k * k

    def call(k: int) -> Any:
        return lambda: ctx.step.run(f"square-{k}", square, k)

    squares = await ctx.group.parallel(tuple(call(k) for k in range(1, 4)))
    total = await ctx.step.run("total", _logged, ctx, "parallel", "total", sum(squares))
    return {"squares": list(squares), "total": total}


# step.sleep
@client.create_function(fn_id="sleeper", trigger=inngest.TriggerEvent(event=f"{PREFIX}/sleep"))
async def sleeper(ctx: inngest.Context) -> dict[str, Any]:
    before = await ctx.step.run("before", _logged, ctx, "sleeper", "before", time.time())
    await ctx.step.sleep("nap", datetime.timedelta(seconds=_number(ctx, "seconds", 1)))
    after = await ctx.step.run("after", _logged, ctx, "sleeper", "after", time.time())
    return {"slept": after - before}


# step.wait_for_event with an expression
@client.create_function(fn_id="waiter", trigger=inngest.TriggerEvent(event=f"{PREFIX}/wait"))
async def waiter(ctx: inngest.Context) -> dict[str, Any]:
    approval = await ctx.step.wait_for_event(
        "approval",
        event=f"{PREFIX}/approve",
        if_exp="async.data.key == event.data.key",
        timeout=datetime.timedelta(seconds=_number(ctx, "timeout", 30)),
    )
    if approval is None:
        return {"approved": False}
    return {"approved": True, "by": approval.data.get("by"), "key": approval.data.get("key")}


# step.invoke
@client.create_function(fn_id="child", trigger=inngest.TriggerEvent(event=f"{PREFIX}/child"))
async def child(ctx: inngest.Context) -> dict[str, Any]:
    x = int(_number(ctx, "x"))
    if ctx.event.data.get("fail"):
        raise inngest.NonRetriableError("the child refuses")
    tripled = await ctx.step.run("triple", _logged, ctx, "child", "triple", x * 3)
    return {"tripled": tripled}


@client.create_function(fn_id="invoker", trigger=inngest.TriggerEvent(event=f"{PREFIX}/invoke"))
async def invoker(ctx: inngest.Context) -> dict[str, Any]:
    data: dict[str, Any] = {"x": int(_number(ctx, "x")), "token": _token(ctx)}
    if ctx.event.data.get("fail"):
        data["fail"] = True
    try:
        result = await ctx.step.invoke("call-child", function=child, data=data)
    except inngest.StepError as exc:
        return {"child_failed": True, "message": exc.message}
    return {"child": result}


# step.send_event starts another function
@client.create_function(fn_id="sender", trigger=inngest.TriggerEvent(event=f"{PREFIX}/send"))
async def sender(ctx: inngest.Context) -> dict[str, Any]:
    ids = await ctx.step.send_event(
        "emit", inngest.Event(name=f"{PREFIX}/received", data={"token": _token(ctx), "from": ctx.run_id})
    )
    return {"sent": ids}


@client.create_function(fn_id="receiver", trigger=inngest.TriggerEvent(event=f"{PREFIX}/received"))
async def receiver(ctx: inngest.Context) -> dict[str, Any]:
    sent_by = await ctx.step.run("note", _logged, ctx, "receiver", "note", ctx.event.data.get("from"))
    return {"from": sent_by, "token": _token(ctx)}


# failures: on_failure, NonRetriableError, RetryAfterError, retried steps
async def _on_failure(ctx: inngest.Context) -> dict[str, Any]:
    original = ctx.event.data.get("event")
    token = original.get("data", {}).get("token", "") if isinstance(original, dict) else ""
    error = ctx.event.data.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    row = LOG.start(ctx.run_id, "failing-handler", "on-failure", str(token), ctx.attempt, note=str(message))
    LOG.end(row)
    return {"handled": ctx.event.name, "failed_run": ctx.event.data.get("run_id"), "message": message}


@client.create_function(
    fn_id="failing",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/fail"),
    retries=1,
    on_failure=_on_failure,
)
async def failing(ctx: inngest.Context) -> None:
    async def boom() -> None:
        await _logged(ctx, "failing", "boom", None)
        raise ValueError(f"boom {_token(ctx)}")

    await ctx.step.run("boom", boom)


@client.create_function(fn_id="non-retriable", trigger=inngest.TriggerEvent(event=f"{PREFIX}/non-retriable"), retries=3)
async def non_retriable(ctx: inngest.Context) -> None:
    async def refuse() -> None:
        await _logged(ctx, "non-retriable", "refuse", None)
        raise inngest.NonRetriableError("no point retrying")

    await ctx.step.run("refuse", refuse)


@client.create_function(fn_id="retry-after", trigger=inngest.TriggerEvent(event=f"{PREFIX}/retry-after"), retries=3)
async def retry_after(ctx: inngest.Context) -> dict[str, Any]:
    delay = _number(ctx, "delay", 2)

    async def limited() -> str:
        await _logged(ctx, "retry-after", "limited", None)
        if LOG.count(ctx.run_id, "limited") == 1:
            raise inngest.RetryAfterError("rate limited", datetime.timedelta(seconds=delay))
        return "through"

    return {"result": await ctx.step.run("limited", limited)}


@client.create_function(fn_id="flaky", trigger=inngest.TriggerEvent(event=f"{PREFIX}/flaky"), retries=3)
async def flaky(ctx: inngest.Context) -> dict[str, Any]:
    failures = int(_number(ctx, "failures", 2))

    async def wobbly() -> str:
        await _logged(ctx, "flaky", "wobbly", None)
        executions = LOG.count(ctx.run_id, "wobbly")
        if executions <= failures:
            raise RuntimeError(f"wobble {executions}")
        return f"steady after {executions}"

    return {"result": await ctx.step.run("wobbly", wobbly)}


# cancellation
@client.create_function(fn_id="long-sleep", trigger=inngest.TriggerEvent(event=f"{PREFIX}/long-sleep"))
async def long_sleep(ctx: inngest.Context) -> str:
    await ctx.step.run("start", _logged, ctx, "long-sleep", "start", "started")
    await ctx.step.sleep("long", datetime.timedelta(minutes=10))
    await ctx.step.run("never", _logged, ctx, "long-sleep", "never", "woke")
    return "woke"


# crash tests: a slow step (slow only on its first execution), then a sleep
@client.create_function(fn_id="slow", trigger=inngest.TriggerEvent(event=f"{PREFIX}/slow"), retries=10)
async def slow(ctx: inngest.Context) -> dict[str, Any]:
    seconds = _number(ctx, "seconds", 3)

    async def slow_step() -> str:
        row = LOG.start(ctx.run_id, "slow", "slow", _token(ctx), ctx.attempt)
        if LOG.count(ctx.run_id, "slow") == 1:
            await asyncio.sleep(seconds)
        LOG.end(row)
        return "slow-done"

    first = await ctx.step.run("first", _logged, ctx, "slow", "first", "first-done")
    second = await ctx.step.run("slow", slow_step)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=_number(ctx, "nap", 1)))
    last = await ctx.step.run("last", _logged, ctx, "slow", "last", "last-done")
    return {"first": first, "slow": second, "last": last}


# flow control configured through the Inngest SDK: every key is the event's token, so each
# test works on its own keys while sharing the app
@client.create_function(
    fn_id="rate-limited",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/rate"),
    rate_limit=inngest.RateLimit(limit=1, period=datetime.timedelta(hours=1), key="event.data.token"),
)
async def rate_limited(ctx: inngest.Context) -> dict[str, Any]:
    return {"n": ctx.event.data.get("n")}


@client.create_function(
    fn_id="idempotent",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/idempotent"),
    idempotency="event.data.token",
)
async def idempotent(ctx: inngest.Context) -> dict[str, Any]:
    return {"n": ctx.event.data.get("n")}


@client.create_function(
    fn_id="debounced",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/debounce"),
    debounce=inngest.Debounce(period=datetime.timedelta(seconds=2), key="event.data.token"),
)
async def debounced(ctx: inngest.Context) -> dict[str, Any]:
    return {"n": ctx.event.data.get("n")}


@client.create_function(
    fn_id="batched",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/batch"),
    batch_events=inngest.Batch(max_size=3, timeout=datetime.timedelta(seconds=2), key="event.data.token"),
)
async def batched(ctx: inngest.Context) -> dict[str, Any]:
    return {"numbers": [event.data.get("n") for event in ctx.events]}


@client.create_function(
    fn_id="singleton",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/singleton"),
    singleton=inngest.Singleton(mode="skip", key="event.data.token"),
)
async def singleton(ctx: inngest.Context) -> dict[str, Any]:
    await ctx.step.sleep("hold", datetime.timedelta(seconds=_number(ctx, "seconds", 3)))
    return {"n": ctx.event.data.get("n")}


@client.create_function(
    fn_id="cancellable",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/cancellable"),
    cancel=[inngest.Cancel(event=f"{PREFIX}/cancel-job", if_exp="async.data.token == event.data.token")],
)
async def cancellable(ctx: inngest.Context) -> None:
    await ctx.step.run("start", _logged, ctx, "cancellable", "start", None)
    await ctx.step.sleep("hold", datetime.timedelta(seconds=30))
    await ctx.step.run("never", _logged, ctx, "cancellable", "never", None)


@client.create_function(
    fn_id="time-boxed",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/time-boxed"),
    timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=2)),
)
async def time_boxed(ctx: inngest.Context) -> None:
    await ctx.step.run("start", _logged, ctx, "time-boxed", "start", None)
    await ctx.step.sleep("hold", datetime.timedelta(seconds=30))
    await ctx.step.run("never", _logged, ctx, "time-boxed", "never", None)


# flow control: concurrency (function-wide and per key), throttle, priority
@client.create_function(
    fn_id="limited",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/limited"),
    concurrency=[inngest.Concurrency(limit=2), inngest.Concurrency(limit=1, key="event.data.user")],
)
async def limited(ctx: inngest.Context) -> str:
    await ctx.step.run("work", _logged, ctx, "limited", "work", "done", _number(ctx, "seconds", 0.3))
    return str(ctx.event.data.get("user"))


@client.create_function(
    fn_id="throttled",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/throttled"),
    throttle=inngest.Throttle(limit=1, period=datetime.timedelta(seconds=1), burst=1),
)
async def throttled(ctx: inngest.Context) -> str:
    await ctx.step.run("work", _logged, ctx, "throttled", "work", "done")
    return "done"


@client.create_function(
    fn_id="prioritized",
    trigger=inngest.TriggerEvent(event=f"{PREFIX}/prioritized"),
    concurrency=[inngest.Concurrency(limit=1)],
    priority=inngest.Priority(run="event.data.p"),
)
async def prioritized(ctx: inngest.Context) -> str:
    await ctx.step.run("work", _logged, ctx, "prioritized", "work", "done", _number(ctx, "seconds", 0))
    return "done"


FUNCTIONS: list[inngest.Function[Any]] = [
    steps,
    steps_sync,
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
    rate_limited,
    idempotent,
    debounced,
    batched,
    singleton,
    cancellable,
    time_boxed,
    limited,
    throttled,
    prioritized,
]

app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, FUNCTIONS)
