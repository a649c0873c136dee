"""Stepline quickstart: one durable function, run by an engine embedded in this process.

Run it with ``.venv/bin/python -m examples.quickstart`` (after ``./scripts/install``). It sends one
``ai/tailor.resume`` event and prints each step of the run as the engine records it:
a lookup, two steps in parallel (one of which talks to a flaky "model" that fails its first
call, so you can watch a retry), a two-second durable sleep, and an event sent from inside
the run. ``--fail`` makes the model refuse for good, to show the ``on_failure`` handler.

State lives in ``STEPLINE_DATABASE_URL`` (default ``sqlite:///.stepline/dev.db``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import timedelta
from typing import Any

import stepline

client = stepline.Stepline(app_id="quickstart")

JOBS: dict[str, dict[str, Any]] = {
    "job-42": {"title": "Platform Engineer", "company": "Acme Robotics", "skills": ["python", "postgres", "k8s"]},
}


class Stopwatch:
    """Seconds since the event was sent, for the printed timeline."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __str__(self) -> str:
        return f"+{time.monotonic() - self.start:5.2f}s"


elapsed = Stopwatch()


class FlakyModel:
    """Stands in for an LLM API: each prompt fails on its first call, as real endpoints sometimes do."""

    def __init__(self) -> None:
        self.refuse = False
        self._seen: set[str] = set()

    async def complete(self, prompt: str) -> str:
        await asyncio.sleep(0.2)  # pretend to think
        if self.refuse:
            raise stepline.NonRetriableError("the model refused the prompt (simulated; retrying will not help)")
        if prompt not in self._seen:
            self._seen.add(prompt)
            print(f"{elapsed}  model: simulated 503 on the first call; Stepline will retry the step")
            raise ConnectionError("model endpoint returned 503 Service Unavailable (simulated)")
        return f"Tailored resume for {prompt}"


model = FlakyModel()
failure_reported = asyncio.Event()
"""Set by the on_failure handler, so that main() can wait for its message before exiting."""


def load_job_intel(job_id: str) -> dict[str, Any]:
    """A simulated database lookup."""
    job = JOBS.get(job_id)
    if job is None:
        raise stepline.NonRetriableError(f"no job {job_id!r}")
    return {"job_id": job_id, **job}


async def draft_resume(intel: dict[str, Any]) -> dict[str, Any]:
    text = await model.complete(f"{intel['title']} at {intel['company']}")
    return {"text": text, "words": len(text.split())}


def score_match(intel: dict[str, Any], candidate_skills: list[str]) -> dict[str, Any]:
    wanted = set(intel["skills"])
    matched = sorted(wanted & set(candidate_skills))
    return {"score": round(len(matched) / len(wanted), 2), "matched": matched}


async def report_failure(ctx: stepline.Context) -> None:
    """on_failure: runs once ``tailor-resume`` has failed for good (after its retries)."""
    error = ctx.event.data.get("error") or {}
    task_id = ctx.event.data.get("event", {}).get("data", {}).get("task_id")
    print(f"on_failure: task {task_id} failed: {error.get('name')}: {error.get('message')}")
    failure_reported.set()


@client.function(
    id="tailor-resume",
    trigger=stepline.on_event("ai/tailor.resume"),
    retries=3,
    on_failure=report_failure,
)
async def tailor_resume(ctx: stepline.Context) -> dict[str, Any]:
    data = ctx.event.data
    intel = await ctx.step.run("job-intel", load_job_intel, data["job_id"])
    draft, score = await ctx.step.parallel(
        lambda: ctx.step.run("draft", draft_resume, intel),
        lambda: ctx.step.run("score", score_match, intel, data["skills"]),
    )
    await ctx.step.sleep("cool-down", timedelta(seconds=2))
    await ctx.step.send_event(
        "notify",
        stepline.Event(name="ai/tailor.completed", data={"task_id": data["task_id"], "score": score["score"]}),
    )
    return {"task_id": data["task_id"], "resume": draft["text"], "score": score["score"]}


def _short(value: Any, limit: int = 90) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def follow(engine: stepline.Engine, run_id: str) -> stepline.Run:
    """Poll the run every 100 ms, printing status changes and newly recorded steps."""
    seen: set[str] = set()
    status = ""
    while True:
        run = await engine.get_run(run_id)
        if run is None:
            raise stepline.RunNotFoundError(f"no run {run_id!r}")
        if run.status != status and not run.status.is_terminal:
            status = run.status
            print(f"{elapsed}  run {status}")
        for step in run.steps:
            if step.id not in seen:
                seen.add(step.id)
                result = f"error {_short(step.error)}" if step.error else f"-> {_short(step.output)}"
                print(f"{elapsed}  step {step.name:<10} {step.kind:<6} attempts={step.attempts}  {result}")
        if run.status.is_terminal:
            print(f"{elapsed}  run {run.status}")
            return run
        await asyncio.sleep(0.1)


async def main(fail: bool) -> int:
    model.refuse = fail
    database_url = os.environ.get("STEPLINE_DATABASE_URL", "sqlite:///.stepline/dev.db")
    engine = stepline.Engine(client, functions=[tailor_resume], database_url=database_url)
    async with engine:
        print(f"engine started on {database_url}")
        elapsed.start = time.monotonic()
        sent = await engine.send(
            stepline.Event(
                name="ai/tailor.resume",
                data={"task_id": f"task-{int(time.time())}", "job_id": "job-42", "skills": ["python", "postgres"]},
            )
        )
        run_id = sent.run_ids[0]
        print(f"sent event {sent.event_ids[0]}; started run {run_id}")
        run = await follow(engine, run_id)
        if run.status != "completed":
            error = run.error or {}
            print(f"error: {error.get('name')}: {error.get('message')}")
            try:
                await asyncio.wait_for(failure_reported.wait(), timeout=5)
            except TimeoutError:
                print("the on_failure handler did not report within 5 s")
            return 1
        print(f"output: {json.dumps(run.output, indent=2)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m examples.quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--fail", action="store_true", help="make the model fail for good, to run on_failure")
    arguments = parser.parse_args()
    try:
        sys.exit(asyncio.run(main(arguments.fail)))
    except KeyboardInterrupt:
        print("\ninterrupted: the engine stopped; unfinished runs continue the next time it starts")
        sys.exit(130)
