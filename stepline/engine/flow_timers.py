"""``timeouts``: queue items that cancel a run not started, or not finished, in time.

Both are ordinary queue items (``START_TIMEOUT``, ``FINISH_TIMEOUT``) created with the run,
so they survive restarts and fire on whichever server claims them. The finish timer is
created before the run starts, when its deadline is not known yet: it fires at the earliest
possible deadline and, finding the run queued or started later, moves itself to the real one.
"""

from __future__ import annotations

from stepline.engine import clock as clock_
from stepline.engine import flow_ingest, transitions
from stepline.engine import ingest as ingest_
from stepline.engine import registry as registry_
from stepline.protocol import durations
from stepline.storage import records, store

KINDS = frozenset({records.ItemKind.START_TIMEOUT, records.ItemKind.FINISH_TIMEOUT})


async def fire(
    db: store.Store,
    registry: registry_.Registry,
    ingestor: ingest_.Ingestor,
    clock: clock_.Clock,
    item: records.QueueItem,
) -> bool:
    """Handle a leased timeout item; True if it cancelled the run."""
    now = clock.now_ms()
    async with db.transaction() as tx:
        run = await tx.lock_run(item.run_id)
        spec = registry.get(run.function_id) if run is not None else None
        timeouts = spec.flow.timeouts if spec is not None else None
        if run is None or run.status.is_terminal or timeouts is None:
            await _complete(tx, item)
            return False
        if item.kind is records.ItemKind.START_TIMEOUT:
            if run.status is not records.RunStatus.QUEUED or timeouts.start_ms is None:
                await _complete(tx, item)
                return False
            reason = f"timeouts.start: the run did not start within {durations.format_duration_ms(timeouts.start_ms)}"
        else:
            if timeouts.finish_ms is None:
                await _complete(tx, item)
                return False
            deadline = now + timeouts.finish_ms if run.started_at is None else run.started_at + timeouts.finish_ms
            if now < deadline:  # not started yet, or started later than the timer assumed
                item.available_at = deadline
                if not await tx.reschedule_item(item, item.claims):
                    raise transitions.LeaseLostError(item.id)
                return False
            limit = durations.format_duration_ms(timeouts.finish_ms)
            reason = f"timeouts.finish: the run did not finish within {limit}"
        await _complete(tx, item)
        await flow_ingest.cancel(tx, ingestor, run, reason, now)
        return True


async def _complete(tx: store.Transaction, item: records.QueueItem) -> None:
    if not await tx.complete_item(item.id, item.claims):
        raise transitions.LeaseLostError(item.id)


async def clean_up(tx: store.Transaction, spec: registry_.FunctionSpec | None, run: records.RunRecord) -> None:
    """After a run completed: drop the timers and ``cancel_on`` listeners it may still hold.

    ``transitions.end_run`` skips these deletes for a run completing with nothing pending (the
    common case, which then has nothing left); runs of functions with timeouts or cancel_on do.
    """
    if spec is None or (spec.flow.timeouts is None and not spec.flow.cancel):
        return
    await tx.delete_run_items(run.id)
    await tx.delete_run_pauses(run.id)
