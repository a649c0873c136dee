"""The durable function behind a tailoring task: ``ai/tailor.resume`` → ``job-intel``, ``model``, ``persist``.

The task follows the run with no code here: ``pending`` → ``running`` when the first attempt
starts, ``complete`` with the return value as the result, ``failed`` once the run failed for good
and ``report_failure`` ran. Each step is retried on its own (``retries=3``: up to 4 attempts),
and a step that succeeded is never run again, even when the app is killed and restarted.
"""

from __future__ import annotations

from typing import Any

import stepline
from examples.roleready import jobs, simulated_model

client = stepline.Stepline(app_id="roleready")
model = simulated_model.FakeModel()

FAILURE_REASON = "We could not tailor your résumé: the AI model kept failing. Nothing was charged; please try again."


async def report_failure(ctx: stepline.Context) -> str:
    """Runs once the tailoring run failed for good. Records why in the app's own table and returns
    the reason a user sees: Stepline stores the returned string as the task's failure reason."""
    data = ctx.event.data
    error = data.get("error") or {}
    original = data.get("event") or {}
    job_id = (original.get("data") or {}).get("job_id")
    task_id = str(data.get("task_id") or data.get("run_id") or "")
    detail = f"{error.get('name', 'Error')}: {error.get('message', '')}"
    await ctx.step.run("record-failure", jobs.record_failure, task_id, job_id, detail)
    ctx.logger.warning("tailoring of job %s failed for good: %s", job_id, detail)
    return FAILURE_REASON


@client.function(
    id="tailor-resume",
    trigger=stepline.on_event("ai/tailor.resume"),
    retries=3,
    on_failure=report_failure,
)
async def tailor_resume(ctx: stepline.Context) -> dict[str, Any]:
    job_id = str(ctx.event.data["job_id"])

    def job_intel() -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:  # deleted since the route checked it: retrying will not bring it back
            raise stepline.NonRetriableError(f"job {job_id!r} no longer exists")
        return {"job_id": job.id, "title": job.title, "company": job.company, "keywords": job.keywords}

    await ctx.task.progress(0.1, "reading the job description")
    intel: dict[str, Any] = await ctx.step.run("job-intel", job_intel)
    await ctx.task.progress(0.3, "asking the model")
    resume: dict[str, Any] = await ctx.step.run("model", model.tailor, intel)
    await ctx.task.progress(0.9, "saving your résumé")
    resume_id = await ctx.step.run("persist", jobs.save_resume, ctx.task.id or ctx.run_id, job_id, resume)
    return {"resume_id": resume_id, "job_id": job_id, **resume}


FUNCTIONS = [tailor_resume]
