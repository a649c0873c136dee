"""State changes of a run, each applied inside the caller's transaction.

Everything that must not be lost changes together with the queue change that follows from
it: a step is recorded in the same transaction that enqueues the run's continuation, a
run's end in the same transaction that emits its ``function.finished`` event.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import ulid

from stepline.engine import observe, tasks
from stepline.protocol import models
from stepline.storage import records, store

FINISHED_EVENT = "inngest/function.finished"
FAILED_EVENT = "inngest/function.failed"
CANCELLED_EVENT = "inngest/function.cancelled"
INVOKED_EVENT = "inngest/function.invoked"
CRON_EVENT = "inngest/scheduled.timer"
_NO_LIFECYCLE_EVENTS = frozenset({FINISHED_EVENT, FAILED_EVENT, CANCELLED_EVENT})


_RANDOM_BITS = 80
_last_id = (0, 0)
_id_lock = threading.Lock()


def new_id() -> str:
    """A ULID that sorts after every id this process made before (monotonic within a millisecond).

    Plain ULIDs made in the same millisecond sort at random, and the queue breaks ties on
    ``available_at`` by id: monotonic ids keep runs created together in creation order.
    """
    global _last_id
    with _id_lock:  # sync functions run in worker threads and send events from there
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last_id
        if millis <= last_millis:
            millis, random_part = last_millis, last_random + 1
            if random_part >> _RANDOM_BITS:  # 2**80 ids in one millisecond: borrow the next one
                millis, random_part = last_millis + 1, 0
        else:
            random_part = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last_id = (millis, random_part)
    return str(ulid.ULID.from_bytes(millis.to_bytes(6, "big") + random_part.to_bytes(10, "big")))


class LeaseLostError(BaseException):
    """The queue item's lease passed to another worker: roll back, the new holder carries on.

    A BaseException so that user code catching ``Exception`` around a checkpointed step cannot
    swallow it.
    """


async def record_step(
    tx: store.Transaction,
    run: records.RunRecord,
    *,
    step_id: str,
    name: str,
    kind: str,
    result: Any,
    attempts: int,
    started_at: int,
    now: int,
) -> bool:
    """Record a step result (never overwriting one) and take it off the run's pending list."""
    step = records.StepRecord(
        run_id=run.id,
        step_id=step_id,
        name=name,
        kind=kind,
        result=result,
        seq=run.step_count,
        attempts=attempts,
        started_at=started_at,
        ended_at=now,
    )
    inserted = await tx.record_step(step)
    if inserted:
        run.step_count += 1
        observe.step_recorded(run.id, name, kind, started_at, now, failed=_is_error(result))
    if step_id in run.pending:
        run.pending.remove(step_id)
    return inserted


def _is_error(result: Any) -> bool:
    return isinstance(result, dict) and set(result) == {"error"}


def continuation_time(run: records.RunRecord, now: int) -> int:
    """When a run's next call becomes claimable: at the run's creation time, so that under a
    backlog the queue (ordered by ``available_at``) finishes older runs first instead of moving
    every run one step at a time; runs still start in the order they arrived."""
    return min(now, run.created_at)


def discover_item(run: records.RunRecord, now: int) -> records.QueueItem:
    return records.QueueItem(
        id=new_id(),
        run_id=run.id,
        kind=records.ItemKind.DISCOVER,
        available_at=continuation_time(run, now),
        created_at=now,
    )


async def continue_if_ready(
    tx: store.Transaction,
    run: records.RunRecord,
    now: int,
    *,
    reuse: tuple[records.QueueItem, int] | None = None,
) -> bool:
    """Enqueue the next discovery call once nothing is pending.

    ``reuse`` is a leased item ``(item, claims)`` to turn into the discovery item instead of
    deleting it and inserting another (one write instead of two). Returns True if the run
    continues; the reused item is then consumed.
    """
    if run.pending or run.status.is_terminal:
        return False
    run.disable_immediate = False
    if reuse is None:
        await tx.enqueue(discover_item(run, now))
        return True
    item, claims = reuse
    item.kind = records.ItemKind.DISCOVER
    item.step_id = None
    item.attempt = 0
    item.available_at = continuation_time(run, now)
    item.payload = {}
    if not await tx.reschedule_item(item, claims):
        raise LeaseLostError(item.id)
    return True


async def mark_running(tx: store.Transaction, run: records.RunRecord, now: int) -> None:
    if run.status is records.RunStatus.QUEUED:
        run.status = records.RunStatus.RUNNING
        run.started_at = now
        if run.task_id is not None:
            await tx.start_task(run.task_id, now)


def lifecycle_events(run: records.RunRecord) -> list[dict[str, Any]]:
    """``function.finished`` (and ``function.failed`` / ``function.cancelled``) for an ended run."""
    trigger = run.events[0] if run.events else {}
    if str(trigger.get("name", "")) in _NO_LIFECYCLE_EVENTS:
        return []  # a failure handler's own end emits nothing, so handlers never trigger each other
    status_label = {
        records.RunStatus.COMPLETED: "Completed",
        records.RunStatus.FAILED: "Failed",
        records.RunStatus.CANCELLED: "Cancelled",
    }[run.status]
    data: dict[str, Any] = {
        "function_id": run.function_id,
        "run_id": run.id,
        "event": trigger,
        "events": run.events,
        "_inngest": {"status": status_label},
    }
    if run.correlation_id:
        data["correlation_id"] = run.correlation_id
    if run.task_id:
        data["task_id"] = run.task_id  # so the on_failure handler's run ends the task
    if run.status is records.RunStatus.COMPLETED:
        data["result"] = run.output
    else:
        data["error"] = run.error or models.error_body("Cancelled", "the run was cancelled")
    emitted = [{"name": FINISHED_EVENT, "data": data, "id": f"{run.id}-finished"}]
    if run.status is records.RunStatus.FAILED:
        emitted.append({"name": FAILED_EVENT, "data": data, "id": run.id})
    elif run.status is records.RunStatus.CANCELLED:
        emitted.append({"name": CANCELLED_EVENT, "data": data, "id": f"{run.id}-cancelled"})
    return emitted


async def end_run(
    tx: store.Transaction,
    run: records.RunRecord,
    status: records.RunStatus,
    now: int,
    *,
    output: Any = None,
    error: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Move a run to a terminal state, drop its queue items and pauses; returns the lifecycle
    events the caller must ingest in the same transaction."""
    # A run completing from a discovery call has nothing pending, hence no other queue items
    # and no pauses: skip the two deletes on the most common path.
    leftovers = bool(run.pending) or status is not records.RunStatus.COMPLETED
    run.status = status
    run.ended_at = now
    run.started_at = run.started_at or now
    run.output = output
    run.error = error
    run.pending = []
    if leftovers:
        await tx.delete_run_items(run.id)
        await tx.delete_run_pauses(run.id)
    await tx.update_run(run)
    await tasks.run_ended(tx, run, now)
    return lifecycle_events(run)
