"""Retrying a failed run from its failed step: a new run whose memo starts with the old one's results.

``rerun`` starts over: every step runs again. ``retry`` is for a run that failed part-way
(a step exhausted its retries, an API was down for an hour): the new run gets the same
triggering events and a copy of every step result the failed run recorded successfully (data,
finished sleeps, received events, invoke results), so replay returns those results and only
the steps that recorded an error (and what comes after them) run again. A recorded result is
never re-run, in the old run or the new one.

Everything happens in one transaction: the run, its copied steps and its first queue item
exist together or not at all. A failed run's task, if it has one, is reopened and follows the
retry, as for a rerun.
"""

from __future__ import annotations

from collections.abc import Sequence

from stepline import errors
from stepline.engine import flow_control, tasks, transitions
from stepline.engine import registry as registry_
from stepline.storage import records, store


def kept_steps(steps: Sequence[records.StepRecord]) -> list[records.StepRecord]:
    """The steps whose results the retry keeps: all but those that recorded an error."""
    return [step for step in steps if not _is_error(step.result)]


def _is_error(result: object) -> bool:
    return isinstance(result, dict) and set(result) == {"error"}


async def retry_run(
    tx: store.Transaction,
    original: records.RunRecord,
    steps: Sequence[records.StepRecord],
    now: int,
    spec: registry_.FunctionSpec | None = None,
) -> str:
    """Create the retry of ``original`` (which must have failed) in ``tx``; returns the new run's id.

    ``original`` is read under ``tx.lock_run`` by the caller. ``steps`` are its recorded steps,
    which may be read outside ``tx``: a failed run is terminal and records nothing more.
    """
    if original.status is not records.RunStatus.FAILED:
        raise errors.RunStateError(
            f"run {original.id} is {original.status.value}: only a failed run can be retried from its "
            "failed step (use rerun to start any run again from the beginning)"
        )
    run = records.RunRecord(
        id=transitions.new_id(),
        function_id=original.function_id,
        event_id=original.event_id,
        events=original.events,
        status=records.RunStatus.QUEUED,
        created_at=now,
        correlation_id=original.correlation_id,
    )
    await tasks.reopen_for_rerun(tx, original, run, now)  # the task (if any) follows the retry
    await tx.insert_run(run)
    for step in kept_steps(steps):
        copied = records.StepRecord(
            run_id=run.id,
            step_id=step.step_id,
            name=step.name,
            kind=step.kind,
            result=step.result,
            seq=run.step_count,
            attempts=step.attempts,
            started_at=step.started_at,
            ended_at=step.ended_at,
        )
        if await tx.record_step(copied):
            run.step_count += 1
    await tx.update_run(run)
    item = transitions.discover_item(run, now)
    if spec is not None:
        await flow_control.prepare(tx, [(spec, run, item)], now)  # the retry keeps its limits
    await tx.enqueue(item)
    return run.id
