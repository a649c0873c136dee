"""Tracked tasks: what an end user waits on, following the run its event starts.

``enqueue`` writes, inside the caller's transaction, the quota use, the event, the runs it
triggers and the task row, so a task never exists without its event or the reverse. From then
on the task follows its run without user code:

- ``pending`` until the run's first call starts (``running``);
- ``complete`` with the run's output when it completes;
- ``cancelled`` when the run is cancelled;
- ``failed`` once the run failed for good *and* its ``on_failure`` handler (if the function has
  one) ended; the handler may return a string, which becomes the reason a UI shows.

A task still pending at its deadline is failed by the sweeper (``engine.sweeper``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import ulid

from stepline import errors
from stepline.engine import transitions
from stepline.protocol import durations, jsonvalue
from stepline.storage import records, store

if TYPE_CHECKING:  # ingest imports this module (through transitions)
    from stepline.engine import ingest as ingest_

DEFAULT_PENDING_TIMEOUT_MS = 10 * 60_000
MAX_PENDING_TIMEOUT_MS = 30 * 86_400_000
MAX_KIND_LENGTH = 200
MAX_OWNER_LENGTH = 500
MAX_MESSAGE_LENGTH = 2_000
MAX_QUOTA_WINDOW_MS = 366 * 86_400_000


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRequest:
    """What ``enqueue`` needs; validated by ``TaskRequest.build``."""

    kind: str
    owner: str
    event: dict[str, Any]
    """The event to send, in wire form."""
    quota: records.QuotaRequest | None = None
    refund_on_failure: bool = False
    pending_timeout_ms: int = DEFAULT_PENDING_TIMEOUT_MS
    task_id: str | None = None
    """Chosen by the client so that a retried enqueue finds the task it already created."""

    @classmethod
    def build(
        cls,
        *,
        kind: object,
        owner: object,
        event: dict[str, Any],
        quota: records.QuotaRequest | None = None,
        refund_on_failure: bool = False,
        pending_timeout_ms: int | None = None,
        task_id: str | None = None,
    ) -> TaskRequest:
        if not isinstance(kind, str) or not kind.strip() or len(kind) > MAX_KIND_LENGTH:
            raise errors.ConfigurationError(f"a task needs a 'kind': a non-empty string of at most {MAX_KIND_LENGTH}")
        if not isinstance(owner, str) or not owner.strip() or len(owner) > MAX_OWNER_LENGTH:
            raise errors.ConfigurationError(
                f"a task needs an 'owner': a non-empty string of at most {MAX_OWNER_LENGTH} (the user's id)"
            )
        _check_storable("kind", kind)
        _check_storable("owner", owner)
        if quota is not None:
            _check_storable("quota.feature", quota.feature)
        timeout = DEFAULT_PENDING_TIMEOUT_MS if pending_timeout_ms is None else pending_timeout_ms
        if not 1_000 <= timeout <= MAX_PENDING_TIMEOUT_MS:
            raise errors.ConfigurationError("'pending_timeout' must be from 1 second to 30 days")
        if task_id is not None:
            try:
                task_id = str(ulid.ULID.from_str(task_id))
            except ValueError:
                raise errors.ConfigurationError(
                    f"a task 'id' chosen by the client must be a ULID (got {task_id!r}): ids sort by creation time"
                ) from None
        return cls(kind, owner, event, quota, refund_on_failure, timeout, task_id)


def _check_storable(field: str, text: str) -> None:
    """Refuse what a text column cannot hold (identically on SQLite and PostgreSQL)."""
    try:
        jsonvalue.check_json(text, field)
    except errors.SerializationError as exc:
        raise errors.ConfigurationError(str(exc)) from None


def request_from_body(body: dict[str, Any]) -> TaskRequest:
    """A ``TaskRequest`` from the JSON of ``POST /v1/tasks`` (what ``client.tasks.enqueue`` builds);
    ``ConfigurationError`` names the field that is wrong."""
    event = body.get("event")
    if not isinstance(event, dict):
        raise errors.ConfigurationError("a task needs an 'event' object with a 'name'")
    quota = None
    raw_quota = body.get("quota")
    if raw_quota is not None:
        if not isinstance(raw_quota, dict):
            raise errors.ConfigurationError("'quota' must be an object with feature, limit and window")
        feature, limit = raw_quota.get("feature"), raw_quota.get("limit")
        if not isinstance(feature, str) or not feature.strip() or len(feature) > 200:
            raise errors.ConfigurationError("quota.feature must be a non-empty string of at most 200 characters")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise errors.ConfigurationError(f"quota.limit must be a whole number of at least 1 (got {limit!r})")
        window_ms = _duration_ms("quota.window", raw_quota.get("window"))
        if not 1_000 <= window_ms <= MAX_QUOTA_WINDOW_MS:
            raise errors.ConfigurationError("quota.window must be from 1 second to 366 days")
        quota = records.QuotaRequest(feature, str(body.get("owner")), limit, window_ms)
    timeout = body.get("pending_timeout")
    return TaskRequest.build(
        kind=body.get("kind"),
        owner=body.get("owner"),
        event=event,
        quota=quota,
        refund_on_failure=bool(raw_quota.get("refund_on_failure")) if isinstance(raw_quota, dict) else False,
        pending_timeout_ms=None if timeout is None else _duration_ms("pending_timeout", timeout),
        task_id=body.get("id"),
    )


def _duration_ms(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise errors.ConfigurationError(f"{field} must be seconds or a time string like '1d' (got {value!r})")
    try:
        return durations.to_milliseconds(value)
    except errors.ConfigurationError as exc:
        raise errors.ConfigurationError(f"{field}: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Enqueued:
    task: records.TaskRecord
    created: bool
    """False when the task id already existed (a retried enqueue): nothing new was written."""


async def enqueue(tx: store.Transaction, ingestor: ingest_.Ingestor, request: TaskRequest, now: int) -> Enqueued:
    """Create the task, its quota use, its event and the runs the event triggers.

    Raises ``QuotaExceeded`` (before anything is written; the caller's transaction then holds
    nothing of this task) when the owner has used up the quota.
    """
    plan = plan_task(ingestor, request, now)
    if plan is not None:
        enqueued = planned_result(request, plan, await tx.create_task(plan))
        if enqueued is not None:
            return enqueued
    return await enqueue_stepwise(tx, ingestor, request, now, task_id=None if plan is None else plan.task.id)


async def enqueue_stepwise(
    tx: store.Transaction, ingestor: ingest_.Ingestor, request: TaskRequest, now: int, *, task_id: str | None = None
) -> Enqueued:
    """``enqueue`` verb by verb, for any function: flow control decides inside the transaction
    and wait or cancel pauses are matched against the event."""
    task_id = task_id or request.task_id or transitions.new_id()
    event = _task_event(request, task_id)
    if request.task_id is not None:
        await tx.lock_task_id(task_id)  # a retry racing its first attempt waits for it, then finds it
    existing = await tx.lock_task(task_id)
    if existing is not None:
        return _retried(existing, request)
    if request.quota is not None:
        wait_ms = await tx.consume_quota(request.quota, task_id, now)
        if wait_ms is not None:
            raise quota_exceeded(request.quota, wait_ms)
    result = await ingestor.ingest(tx, [event], now, task_id=task_id)
    if result.matched and result.task_run_id is None:
        raise _event_id_used(event)
    run_id = result.task_run_id
    turned_away = None
    if run_id is not None and run_id not in result.run_ids:
        # Flow control did not start the task's run: skipped (rate limit), folded into another
        # run (a batch) or deduplicated (an idempotency key). The task fails at once, saying why.
        skipped = await tx.lock_run(run_id)
        turned_away = _reason(
            skipped.error if skipped is not None else None,
            "flow control did not start a run for this task (its event joined a batch or matched an "
            "idempotency key already used): tasks need functions that start a run per event",
        )
        run_id = skipped.id if skipped is not None else None
    task = dataclasses.replace(_pending_task(request, task_id, result.internal_ids[0], now), run_id=run_id)
    if not await tx.insert_task(task):
        # Another transaction created this id between our lock and insert (a concurrent retry).
        raise errors.TaskConflictError(f"task id {task_id!r} was created concurrently; retry to read it")
    if turned_away is not None:
        await _finish(tx, task, records.TaskStatus.FAILED, now, error=turned_away)
    return Enqueued(task, created=True)


STALE_PLANS = 3
"""Plans of one enqueue on each path (one call, then the general path) refused because another
process changed the synced functions meanwhile; the general path's last try is not checked, so
that a storm of syncs cannot stop enqueues."""


async def create_planned(
    request: TaskRequest,
    plan: Callable[[str | None], records.TaskPlan | None],
    create: Callable[[records.TaskPlan], Awaitable[records.TaskPlanOutcome]],
    reload: Callable[[], Awaitable[None]],
) -> tuple[Enqueued | None, str | None]:
    """Plan the task (``plan`` with the id of the previous plan, None at first) and write it in
    one call (``create``), planning again after ``reload`` while the store says the synced
    functions changed. Returns the task, or None and the task id for the general path
    (``enqueue_stepwise``): a function with flow control, pauses to match, or stale plans."""
    task_id: str | None = None
    for _ in range(STALE_PLANS):
        planned = plan(task_id)
        if planned is None:
            return None, task_id
        task_id = planned.task.id
        outcome = await create(planned)
        if outcome.stale:
            await reload()
            continue
        return planned_result(request, planned, outcome), task_id
    return None, task_id


def plan_task(
    ingestor: ingest_.Ingestor,
    request: TaskRequest,
    now: int,
    *,
    task_id: str | None = None,
    functions: records.FunctionsFingerprint | None = None,
) -> records.TaskPlan | None:
    """The whole task decided up front, for ``create_task`` to write at once; None when a
    function its event triggers has flow control (``enqueue_stepwise`` then does the work).

    ``task_id`` keeps the id of an earlier plan of the same request; ``functions`` is the
    fingerprint of the synced functions ``ingestor`` plans from, if it plans from those."""
    task_id = request.task_id or task_id or transitions.new_id()
    planned = ingestor.plan_task_runs(_task_event(request, task_id), now)
    if planned is None:
        return None
    event, runs = planned
    return records.TaskPlan(
        task=_pending_task(request, task_id, event.internal_id, now),
        serialise=request.task_id is not None,
        quota=request.quota,
        event=event,
        runs=runs,
        now=now,
        functions=functions,
    )


def planned_result(request: TaskRequest, plan: records.TaskPlan, outcome: records.TaskPlanOutcome) -> Enqueued | None:
    """What ``create_task`` did, as ``enqueue`` answers it (raising its refusals); None when
    pauses await the event and ``enqueue_stepwise`` must do the work. A ``stale`` outcome is
    the planner's to handle (reload the functions, plan again) before it gets here."""
    assert not outcome.stale
    if outcome.existing is not None:
        return _retried(outcome.existing, request)
    if outcome.quota_wait_ms is not None:
        assert request.quota is not None
        raise quota_exceeded(request.quota, outcome.quota_wait_ms)
    if outcome.listeners:
        return None
    if outcome.created is None:
        raise _event_id_used(plan.event.to_wire())
    return Enqueued(outcome.created, created=True)


def _task_event(request: TaskRequest, task_id: str) -> dict[str, Any]:
    event = dict(request.event)
    event.setdefault("id", task_id)  # one run per task: the task id is the idempotency key
    return event


def _pending_task(request: TaskRequest, task_id: str, event_id: str, now: int) -> records.TaskRecord:
    return records.TaskRecord(
        id=task_id,
        kind=request.kind,
        owner=request.owner,
        status=records.TaskStatus.PENDING,
        event_id=event_id,
        created_at=now,
        updated_at=now,
        pending_deadline=now + request.pending_timeout_ms,
        pending_timeout_ms=request.pending_timeout_ms,
        quota_feature=None if request.quota is None else request.quota.feature,
        refund_on_failure=request.refund_on_failure,
    )


def _retried(existing: records.TaskRecord, request: TaskRequest) -> Enqueued:
    """The task a retried enqueue created before; another task's id is a conflict."""
    if existing.owner != request.owner or existing.kind != request.kind:
        raise errors.TaskConflictError(f"task id {existing.id!r} is already used by another task")
    return Enqueued(existing, created=False)


def _event_id_used(event: dict[str, Any]) -> errors.TaskConflictError:
    """Every function the event triggers already ran for this event id: the task would have no
    run to follow. Refused (the caller's transaction rolls back: nothing is written)."""
    return errors.TaskConflictError(
        f"event id {event['id']!r} already started the functions event {event.get('name')!r} triggers "
        "(in the last 24 hours); a task needs a new run: leave the event id out, or use a new one"
    )


def quota_exceeded(quota: records.QuotaRequest, wait_ms: int) -> errors.QuotaExceeded:
    seconds = math.ceil(wait_ms / 1000)
    return errors.QuotaExceeded(
        f"quota exceeded: {quota.owner!r} used all {quota.limit} uses of {quota.feature!r}; try again in {seconds} s",
        feature=quota.feature,
        limit=quota.limit,
        retry_after=seconds,
    )


def is_failure_handler(run: records.RunRecord) -> bool:
    trigger = run.events[0] if run.events else {}
    return trigger.get("name") == transitions.FAILED_EVENT


async def run_ended(tx: store.Transaction, run: records.RunRecord, now: int) -> None:
    """Move the task ``run`` drives after the run reached a terminal state."""
    if run.task_id is None:
        return
    task = await tx.lock_task(run.task_id)
    if task is None or task.status.is_terminal:
        return
    if is_failure_handler(run):
        await _finish(tx, task, records.TaskStatus.FAILED, now, error=_handled_failure(task, run))
        return
    if task.run_id != run.id:
        return  # an older run of a task that was rerun since
    if run.status is records.RunStatus.COMPLETED:
        await _finish(tx, task, records.TaskStatus.COMPLETE, now, result=run.output)
    elif run.status is records.RunStatus.SKIPPED:
        await _finish(
            tx, task, records.TaskStatus.FAILED, now, error=_reason(run.error, "flow control skipped the run")
        )
    elif run.status is records.RunStatus.CANCELLED:
        await _finish(tx, task, records.TaskStatus.CANCELLED, now, error=_reason(run.error, "the run was cancelled"))
    else:
        # Failed for good: the reason is known, but the task ends only after the function's
        # on_failure handler ran (``failure_unhandled`` ends it at once when there is none).
        task.error = _reason(run.error, "the run failed")
        task.updated_at = now
        await tx.update_task(task)


async def failure_unhandled(tx: store.Transaction, task_id: str, now: int) -> None:
    """The failed run's ``function.failed`` event started no handler: fail the task now."""
    task = await tx.lock_task(task_id)
    if task is None or task.status.is_terminal:
        return
    await _finish(tx, task, records.TaskStatus.FAILED, now, error=task.error or _reason(None, "the run failed"))


async def reopen_for_rerun(
    tx: store.Transaction, original: records.RunRecord, rerun: records.RunRecord, now: int
) -> None:
    """A rerun of a task's run drives the task again: back to pending, result and error cleared."""
    if original.task_id is None or is_failure_handler(original):
        return
    task = await tx.lock_task(original.task_id)
    if task is None or task.run_id != original.id:
        return
    rerun.task_id = task.id
    task.status = records.TaskStatus.PENDING
    task.run_id = rerun.id
    task.progress = None
    task.message = None
    task.result = None
    task.error = None
    task.started_at = None
    task.ended_at = None
    task.updated_at = now
    task.pending_deadline = now + task.pending_timeout_ms
    await tx.update_task(task)


async def cancel_unstarted(tx: store.Transaction, task: records.TaskRecord, now: int) -> None:
    """Cancel a task whose run never existed or already ended."""
    error = {"name": "Cancelled", "message": "the task was cancelled"}
    await _finish(tx, task, records.TaskStatus.CANCELLED, now, error=error)


async def fail_pending(tx: store.Transaction, task: records.TaskRecord, reason: str, now: int) -> None:
    """The sweeper's verdict on a task still pending at its deadline."""
    await _finish(tx, task, records.TaskStatus.FAILED, now, error={"name": "TaskPendingTimeout", "message": reason})


def validate_progress(progress: object, message: object) -> tuple[float, str | None]:
    if isinstance(progress, bool) or not isinstance(progress, int | float) or not 0.0 <= float(progress) <= 1.0:
        raise errors.ConfigurationError(f"task progress must be a number from 0.0 to 1.0 (got {progress!r})")
    if message is not None and not isinstance(message, str):
        raise errors.ConfigurationError("a task progress message must be a string")
    if message is not None:
        jsonvalue.check_json(message, "the task progress message")
        message = message[:MAX_MESSAGE_LENGTH]
    return float(progress), message


async def _finish(
    tx: store.Transaction,
    task: records.TaskRecord,
    status: records.TaskStatus,
    now: int,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
) -> None:
    task.status = status
    task.result = result
    task.error = error
    task.ended_at = now
    task.updated_at = now
    if status is records.TaskStatus.COMPLETE:
        task.progress = 1.0
    await tx.update_task(task)
    if status is records.TaskStatus.FAILED and task.refund_on_failure and task.quota_feature is not None:
        await tx.refund_quota(task.id)


def _reason(error: dict[str, Any] | None, default: str) -> dict[str, Any]:
    error = error or {}
    return {"name": str(error.get("name") or "Error"), "message": str(error.get("message") or default)}


def _handled_failure(task: records.TaskRecord, handler: records.RunRecord) -> dict[str, Any]:
    """The task's error once its failure handler ended: the handler's returned string, if any,
    replaces the message (a reason written for users); otherwise the run's own error stands."""
    trigger_data = (handler.events[0] if handler.events else {}).get("data") or {}
    error = task.error or _reason(trigger_data.get("error"), "the run failed")
    output = handler.output
    if handler.status is records.RunStatus.COMPLETED and isinstance(output, str) and output.strip():
        error = {**error, "message": output.strip()[:MAX_MESSAGE_LENGTH]}
    return error


def task_body(task: records.TaskRecord) -> dict[str, Any]:
    """A task as clients receive it, over HTTP and in-process alike (``stepline.Task.from_wire``)."""
    return {
        "id": task.id,
        "kind": task.kind,
        "owner": task.owner,
        "status": task.status.value,
        "progress": task.progress,
        "message": task.message,
        "result": task.result,
        "error": task.error,
        "run_id": task.run_id,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "version": task.version,
    }


async def page_body(
    db: store.Store,
    *,
    owner: str | None,
    status: records.TaskStatus | None,
    cursor: str | None,
    limit: int,
    kind: str | None = None,
) -> dict[str, Any]:
    """One page of tasks as clients receive it: ``{"data": [...], "cursor": next cursor or None}``."""
    found = await db.list_tasks(
        owner=owner, status=status, cursor=cursor, limit=limit + 1, kind=kind
    )  # one more: is there a next page?
    more = len(found) > limit
    found = found[:limit]
    return {"data": [task_body(task) for task in found], "cursor": found[-1].id if more else None}
