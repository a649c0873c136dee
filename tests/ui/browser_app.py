"""The app the browser tests drive: ``uvicorn tests.ui.browser_app:app`` (a Stepline FastAPI app).

``nap`` sleeps for an hour (to be cancelled), ``charge`` fails at its second step until the
file named by ``BROWSER_FLAG`` exists (to be retried from that step), ``slow`` takes a few
seconds over three steps, reporting progress when it drives a task (to be watched finishing).
``BROWSER_LOG`` counts step executions, one line per execution, so tests can tell a step that
ran again from one whose result was kept.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import fastapi

import stepline
import stepline.fastapi

client = stepline.Stepline(app_id="browser")
FLAG = Path(os.environ.get("BROWSER_FLAG", "/nonexistent/flag"))
LOG = Path(os.environ.get("BROWSER_LOG", os.devnull))


def executed(step: str) -> None:
    with LOG.open("a") as log:
        log.write(f"{step}\n")


@client.function(id="nap", trigger=stepline.on_event("browser/nap"))
async def nap(ctx: stepline.Context) -> str:
    await ctx.step.run("prepare", lambda: {"ready": True})
    await ctx.step.sleep("long-nap", timedelta(hours=1))
    return "rested"


@client.function(id="charge", trigger=stepline.on_event("browser/charge"), retries=0)
async def charge(ctx: stepline.Context) -> dict[str, object]:
    def fetch() -> dict[str, object]:
        executed("fetch")
        return {"amount": 42, "note": ctx.event.data.get("note", "")}

    def pay(amount: object) -> str:
        executed("pay")
        if not FLAG.exists():
            raise stepline.NonRetriableError("the payment API is down <b>for maintenance</b>")
        return f"paid {amount}"

    order = await ctx.step.run("fetch", fetch)
    receipt = await ctx.step.run("pay", pay, order["amount"])
    return {"order": order, "receipt": receipt}


@client.function(id="slow", trigger=stepline.on_event("browser/slow"))
async def slow(ctx: stepline.Context) -> int:
    total = 0
    for index in range(3):

        async def work(value: int = index) -> int:
            await asyncio.sleep(float(ctx.event.data.get("seconds", 0.8)))
            return value + 1

        total += await ctx.step.run(f"part-{index}", work)
        await ctx.task.progress((index + 1) / 3, f"part {index + 1} of 3")  # a no-op for runs without a task
    return total


app = fastapi.FastAPI()
stepline.fastapi.serve(app, client, [nap, charge, slow])
