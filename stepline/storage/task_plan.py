"""``Transaction.create_task`` composed of the fine-grained verbs: what it means, and what SQLite runs.

PostgreSQL runs the same steps as one server-side function (``stepline_create_task``, migration
0009): each verb there is a round trip and about a tenth of a millisecond of driver work, and an
enqueue needs about ten of them. The tests run both backends against the same expectations.
"""

from __future__ import annotations

import dataclasses

from stepline import errors
from stepline.storage import records, store


async def create_stepwise(tx: store.Transaction, plan: records.TaskPlan) -> records.TaskPlanOutcome:
    if plan.functions is not None and await tx.functions_fingerprint() != plan.functions:
        return records.TaskPlanOutcome(stale=True)
    task_id = plan.task.id
    if plan.serialise:
        await tx.lock_task_id(task_id)  # a retry racing its first attempt waits for it, then finds it
    existing = await tx.lock_task(task_id)
    if existing is not None:
        return records.TaskPlanOutcome(existing=existing)
    if await tx.pauses_for_event(plan.event.name):
        return records.TaskPlanOutcome(listeners=True)
    if plan.quota is not None:
        wait_ms = await tx.consume_quota(plan.quota, task_id, plan.now)
        if wait_ms is not None:
            return records.TaskPlanOutcome(quota_wait_ms=wait_ms)
    await tx.insert_events([plan.event])
    claimed = await tx.claim_idempotency_keys([planned.claim for planned in plan.runs], plan.now)
    runs = [planned.run for planned, won in zip(plan.runs, claimed, strict=True) if won]
    if plan.runs and not runs:
        return records.TaskPlanOutcome()  # the engine refuses the task: its transaction rolls back
    if runs:
        runs[0] = dataclasses.replace(runs[0], task_id=task_id)
    await tx.insert_runs(runs)
    started = {run.id for run in runs}
    await tx.enqueue_many([planned.item for planned in plan.runs if planned.run.id in started])
    task = dataclasses.replace(plan.task, run_id=runs[0].id if runs else None)
    if not await tx.insert_task(task):
        # Another transaction created this id between our lock and insert (a concurrent retry).
        raise errors.TaskConflictError(f"task id {task_id!r} was created concurrently; retry to read it")
    return records.TaskPlanOutcome(created=task, started=[run.id for run in runs])
