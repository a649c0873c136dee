"""A small FastAPI app served by ``stepline dev``: a route enqueues work and answers 202 at once.

Run by ``./scripts/dev`` (which also starts the server), or by hand::

    STEPLINE_DEV=1 uvicorn examples.hello_app.app:app --port 8000
    stepline dev -u http://127.0.0.1:8000/api/stepline

Then ``curl -X POST localhost:8000/api/summaries -H 'content-type: application/json' -d '{"text": "..."}'``
and follow the run with ``stepline runs show <run id>``.
"""

from __future__ import annotations

import asyncio
import os
import random
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

import stepline
import stepline.fastapi

client = stepline.Stepline(app_id="hello")

# A stand-in for a slow, flaky model API; no network. Tune with these variables.
MODEL_LATENCY_S = float(os.environ.get("HELLO_MODEL_LATENCY_S", "0.5"))
MODEL_FAILURE_RATE = float(os.environ.get("HELLO_MODEL_FAILURE_RATE", "0.3"))


async def fake_model(text: str) -> dict[str, Any]:
    await asyncio.sleep(MODEL_LATENCY_S)
    if random.random() < MODEL_FAILURE_RATE:
        raise RuntimeError("simulated model error (HTTP 503)")
    words = text.split()
    return {"summary": " ".join(words[:12]) + (" ..." if len(words) > 12 else ""), "words": len(words)}


async def report_failure(ctx: stepline.Context) -> None:
    error = ctx.event.data["error"]
    ctx.logger.warning("summary failed for good: %s: %s", error.get("name"), error.get("message"))


@client.function(id="summarize", trigger=stepline.on_event("demo/summarize"), retries=3, on_failure=report_failure)
async def summarize(ctx: stepline.Context) -> dict[str, Any]:
    text = await ctx.step.run("clean", lambda: " ".join(str(ctx.event.data.get("text", "")).split()))
    result: dict[str, Any] = await ctx.step.run("model", fake_model, text)
    await ctx.step.sleep("cool-down", timedelta(seconds=1))
    await ctx.step.send_event("notify", stepline.Event(name="demo/summarized", data={"words": result["words"]}))
    return result


class SummaryRequest(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)


app = FastAPI(title="Stepline hello app")
stepline.fastapi.serve(app, client, [summarize], path="/api/stepline")


@app.post("/api/summaries", status_code=202)
async def request_summary(body: SummaryRequest) -> dict[str, Any]:
    """Accepted, not done: the summary runs in the background, durably."""
    ids = await client.send(stepline.Event(name="demo/summarize", data={"text": body.text}))
    return {"event_id": ids[0], "follow": "stepline runs list (or GET /v1/events/<event_id> on the server)"}
