"""Flow control decided as events arrive: idempotency keys, rate limits, debounce, batches,
singletons, and the timers and ``cancel_on`` listeners a new run carries.

Everything happens in the ingest transaction. State shared between servers lives in
``flow_keys`` rows, each locked (``Transaction.lock_flow_key``) before it is read, so two
servers deciding for the same function and key take turns; nothing is kept in memory.
Runs that flow control turns away are still stored, as ``skipped`` with the reason in their
error, so the run list explains every event. Skipped runs emit no lifecycle events (as in
Inngest, where a skipped run never existed for ``function.failed``/``finished`` handlers).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from stepline import errors
from stepline.engine import flow_control, flow_options, tasks, transitions
from stepline.engine import registry as registry_
from stepline.protocol import durations, expressions, models
from stepline.storage import records, store

if TYPE_CHECKING:
    from stepline.engine import ingest as ingest_

logger = logging.getLogger("stepline.engine")

IDEMPOTENCY_WINDOW_MS = 24 * 3_600_000
DEFAULT_CANCEL_MS = 366 * 86_400_000
MAX_KEY_LENGTH = 200
SUPERSEDED = "debounced: a later event replaced it"


def group_key(source: str | None, event: dict[str, Any]) -> str:
    """The value of a key expression for ``event`` as a string (``""`` without an expression).

    An expression that cannot be evaluated (say, a missing attribute) gives ``"null"``, so such
    events share one key rather than escaping the limit. Long values are hashed to keep the
    primary key small.
    """
    if source is None:
        return ""
    try:
        value = expressions.evaluate(source, {"event": event})
    except errors.ExpressionError:
        value = None
    return _key_text(value)


def _key_text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) > MAX_KEY_LENGTH:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


async def start_runs(
    tx: store.Transaction,
    ingestor: ingest_.Ingestor,
    planned: list[tuple[registry_.FunctionSpec, records.RunRecord]],
    now: int,
) -> list[str]:
    """Create ``planned`` runs (their event ids already won the idempotency window), applying
    each function's flow control; returns the ids of the runs that will execute, in order."""
    started: list[str] = []
    plain: list[records.RunRecord] = []
    await _lock_in_order(tx, planned)
    for fn, run in planned:
        if not fn.flow.active:
            plain.append(run)
            started.append(run.id)
            continue
        run_id = await _admit(tx, ingestor, fn, run, now)
        if run_id is not None and run_id not in started:
            started.append(run_id)
    await tx.insert_runs(plain)
    items = [transitions.discover_item(run, now) for run in plain]
    specs = {run.id: fn for fn, run in planned}
    await flow_control.prepare(tx, [(specs[run.id], run, item) for run, item in zip(plain, items, strict=True)], now)
    await tx.enqueue_many(items)
    return started


async def _lock_in_order(
    tx: store.Transaction, planned: list[tuple[registry_.FunctionSpec, records.RunRecord]]
) -> None:
    """Lock every flow key these runs will use, in one sorted order, when there are several.

    Two batches of events taking the same keys in opposite orders would otherwise deadlock on
    PostgreSQL (one transaction aborted, its events refused). Locking a row again later in the
    same transaction costs nothing more than the statement.
    """
    keys: set[tuple[str, str, str]] = set()
    for fn, run in planned:
        event = run.events[0] if run.events else {}
        flow = fn.flow
        for kind, spec in (
            ("rate_limit", flow.rate_limit),
            ("batch", flow.batch),
            ("singleton", flow.singleton),
            ("debounce", flow.debounce),
        ):
            if spec is not None:
                keys.add((fn.id, kind, group_key(spec.key, event)))
    if len(keys) > 1:
        for function_id, kind, key in sorted(keys):
            await tx.lock_flow_key(function_id, kind, key)


async def _admit(
    tx: store.Transaction,
    ingestor: ingest_.Ingestor,
    fn: registry_.FunctionSpec,
    run: records.RunRecord,
    now: int,
) -> str | None:
    flow = fn.flow
    event = run.events[0] if run.events else {}
    if flow.idempotency is not None and not await _claim_key(tx, fn, flow.idempotency, run, event, now):
        return None
    if flow.rate_limit is not None:
        reason = await _rate_limited(tx, fn, flow.rate_limit, event, now)
        if reason is not None:
            await skip(tx, run, reason, now, stored=False)
            return None
    batch = flow.batch
    if batch is not None and (batch.if_exp is None or expressions.matches(batch.if_exp, {"event": event})):
        return await _batch(tx, fn, batch, run, now)
    if flow.singleton is not None and not await _singleton(tx, ingestor, fn, flow.singleton, run, event, now):
        return None
    due_at = now
    if flow.debounce is not None:
        due_at = await _debounce(tx, fn, flow.debounce, run, event, now)
    await insert(tx, fn, run, due_at, now)
    return run.id


async def insert(
    tx: store.Transaction, fn: registry_.FunctionSpec, run: records.RunRecord, due_at: int, now: int
) -> str:
    """Store a run with its start item (claimable at ``due_at``), its ``timeouts`` timers and its
    ``cancel_on`` listeners; returns the start item's id."""
    start = transitions.discover_item(run, now)
    if due_at > now:
        start.available_at = due_at
    items = [start]
    timeouts = fn.flow.timeouts
    if timeouts is not None:
        begin = max(due_at, now)
        for kind, delay in (
            (records.ItemKind.START_TIMEOUT, timeouts.start_ms),
            (records.ItemKind.FINISH_TIMEOUT, timeouts.finish_ms),
        ):
            if delay is not None:
                items.append(
                    records.QueueItem(
                        id=transitions.new_id(), run_id=run.id, kind=kind, available_at=begin + delay, created_at=now
                    )
                )
    await tx.insert_runs([run])
    # Concurrency keys, throttle and priority, reckoned from when the run becomes due.
    await flow_control.prepare(tx, [(fn, run, start)], max(due_at, now))
    await tx.enqueue_many(items)
    for index, cancel in enumerate(fn.flow.cancel):
        await tx.insert_pause(_cancel_pause(run, index, cancel, now))
    return start.id


def _cancel_pause(run: records.RunRecord, index: int, cancel: flow_options.CancelSpec, now: int) -> records.PauseRecord:
    return records.PauseRecord(
        id=transitions.new_id(),
        run_id=run.id,
        step_id=f"cancel:{index}",
        kind=records.PauseKind.CANCEL,
        expires_at=cancel.until_ms if cancel.until_ms is not None else now + (cancel.timeout_ms or DEFAULT_CANCEL_MS),
        created_at=now,
        timeout_item_id="",  # none: expiry is checked when a matching event arrives
        event_name=cancel.event,
        expression=cancel.if_exp,
        event=run.events[0] if run.events else {},
        step_name=f"cancel_on {cancel.event}",
    )


async def skip(tx: store.Transaction, run: records.RunRecord, reason: str, now: int, *, stored: bool) -> None:
    """End ``run`` as skipped with ``reason`` (inserting it when it is not ``stored`` yet)."""
    run.status = records.RunStatus.SKIPPED
    run.ended_at = now
    run.error = models.error_body("Skipped", reason)
    run.pending = []
    if not stored:
        await tx.insert_runs([run])
        return
    await tx.delete_run_items(run.id)
    await tx.delete_run_pauses(run.id)
    await tx.update_run(run)
    await tasks.run_ended(tx, run, now)  # a task waiting on a debounced run that was replaced fails


async def cancel(
    tx: store.Transaction, ingestor: ingest_.Ingestor, run: records.RunRecord, reason: str, now: int, depth: int = 0
) -> None:
    """Cancel a locked, unfinished run with ``reason``: it stops before its next step, its
    queue items and pauses go, and ``function.cancelled`` / ``function.finished`` are emitted."""
    error = models.error_body("Cancelled", reason)
    lifecycle = await transitions.end_run(tx, run, records.RunStatus.CANCELLED, now, error=error)
    await ingestor.ingest_lifecycle(tx, lifecycle, now, depth)


async def _claim_key(
    tx: store.Transaction,
    fn: registry_.FunctionSpec,
    source: str,
    run: records.RunRecord,
    event: dict[str, Any],
    now: int,
) -> bool:
    """The ``idempotency`` expression's key, reserved for 24 hours next to event-id keys (the
    prefix keeps the two apart). An expression that fails to evaluate reserves nothing."""
    try:
        value = expressions.evaluate(source, {"event": event})
    except errors.ExpressionError:
        value = None
    if value is None:
        logger.info(
            "idempotency key %r of %s has no value for event %s; starting the run", source, fn.id, event.get("id")
        )
        return True
    key = "idempotency:" + _key_text(value)
    return await tx.claim_idempotency_key(fn.id, key, run.id, now, now + IDEMPOTENCY_WINDOW_MS)


async def _rate_limited(
    tx: store.Transaction,
    fn: registry_.FunctionSpec,
    spec: flow_options.RateLimitSpec,
    event: dict[str, Any],
    now: int,
) -> str | None:
    """GCRA: each run moves the key's theoretical arrival time (``due_at``) on by period/limit;
    a run that would move it more than a period ahead is over the rate. This allows ``limit``
    runs at once, then one every period/limit, and needs one row per key."""
    key = group_key(spec.key, event)
    row = await tx.lock_flow_key(fn.id, "rate_limit", key)
    interval = max(1, spec.period_ms // spec.limit)
    arrival = max(row.due_at, now)
    if arrival + interval - now > spec.period_ms:
        period = durations.format_duration_ms(spec.period_ms)
        keyed = f" for key {key!r}" if spec.key else ""
        return f"rate limit: more than {spec.limit} run(s) per {period}{keyed}"
    row.due_at = arrival + interval
    await tx.update_flow_key(row)
    return None


async def _singleton(
    tx: store.Transaction,
    ingestor: ingest_.Ingestor,
    fn: registry_.FunctionSpec,
    spec: flow_options.SingletonSpec,
    run: records.RunRecord,
    event: dict[str, Any],
    now: int,
) -> bool:
    """True if ``run`` may go ahead: no other run holds the key, or (``cancel`` mode) the
    holder was cancelled. In ``skip`` mode ``run`` is stored as skipped and False returned."""
    key = group_key(spec.key, event)
    row = await tx.lock_flow_key(fn.id, "singleton", key)
    holder = await tx.lock_run(row.run_id) if row.run_id else None
    if holder is not None and not holder.status.is_terminal:
        if spec.mode == "skip":
            await skip(tx, run, f"singleton: run {holder.id} is still {holder.status.value}", now, stored=False)
            return False
        await cancel(tx, ingestor, holder, f"singleton: run {run.id} replaced it", now)
    row.run_id = run.id
    await tx.update_flow_key(row)
    return True


async def _debounce(
    tx: store.Transaction,
    fn: registry_.FunctionSpec,
    spec: flow_options.DebounceSpec,
    run: records.RunRecord,
    event: dict[str, Any],
    now: int,
) -> int:
    """Make ``run`` the key's pending run, due after the quiet period (or the window's timeout);
    a pending run it replaces is skipped. Returns when ``run`` is due."""
    key = group_key(spec.key, event)
    row = await tx.lock_flow_key(fn.id, "debounce", key)
    opened = now
    if row.run_id is not None and now < row.due_at:
        pending = await tx.lock_run(row.run_id)
        if pending is not None and pending.status is records.RunStatus.QUEUED:
            await skip(tx, pending, SUPERSEDED, now, stored=True)
            opened = row.opened_at
    due = now + spec.period_ms
    if spec.timeout_ms is not None:
        due = min(due, opened + spec.timeout_ms)
    row.run_id, row.opened_at, row.due_at = run.id, opened, due
    await tx.update_flow_key(row)
    return due


async def _batch(
    tx: store.Transaction,
    fn: registry_.FunctionSpec,
    spec: flow_options.BatchSpec,
    run: records.RunRecord,
    now: int,
) -> str:
    """Add the event to the key's open batch run, or open one with ``run``; a batch starts when
    full or at its timeout. Returns the id of the run that will receive the event."""
    event = run.events[0]
    row = await tx.lock_flow_key(fn.id, "batch", group_key(spec.key, event))
    if row.run_id is not None and now < row.due_at and row.size < spec.max_size:
        open_run = await tx.lock_run(row.run_id)
        if open_run is not None and open_run.status is records.RunStatus.QUEUED:
            open_run.events.append(event)
            await tx.set_run_events(open_run.id, open_run.events)
            row.size += 1
            if row.size >= spec.max_size:
                await _close_batch(tx, open_run, row, now)
            await tx.update_flow_key(row)
            return open_run.id
    full = spec.max_size <= 1
    due = now if full else now + spec.timeout_ms
    item_id = await insert(tx, fn, run, due, now)
    row.run_id, row.item_id, row.size, row.opened_at, row.due_at = run.id, item_id, 1, now, due
    if full:
        row.run_id = None
    await tx.update_flow_key(row)
    return run.id


async def _close_batch(tx: store.Transaction, run: records.RunRecord, row: records.FlowKeyRecord, now: int) -> None:
    """A full batch starts now: its start item, waiting for the timeout, is replaced."""
    if row.item_id is not None:
        await tx.delete_item(row.item_id)
    await tx.enqueue(transitions.discover_item(run, now))
    row.run_id, row.item_id, row.due_at = None, None, 0


async def cancel_if_matches(
    tx: store.Transaction,
    ingestor: ingest_.Ingestor,
    pause: records.PauseRecord,
    wire: dict[str, Any],
    now: int,
    depth: int,
) -> bool:
    """A ``cancel_on`` listener meets an incoming event: cancel its run if the event matches
    (``event`` is the run's trigger, ``async`` the incoming event) before the listener expired."""
    trigger = pause.event or {}
    if trigger.get("id") == wire.get("id"):
        return False  # the event that started the run does not cancel it
    if pause.expires_at <= now:
        await tx.delete_pause(pause.id)
        return False
    if pause.expression and not expressions.matches(pause.expression, {"event": trigger, "async": wire}):
        return False
    if not await tx.delete_pause(pause.id):
        return False  # another event (or the run's end) got there first
    run = await tx.lock_run(pause.run_id)
    if run is None or run.status.is_terminal:
        return False
    await cancel(tx, ingestor, run, f"cancel_on: event {wire.get('name')!r} ({wire.get('id')}) matched", now, depth)
    return True
