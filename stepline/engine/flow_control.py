"""What claim-time flow control decides when a run is created, in the run's transaction.

* **concurrency**: the run's keys are evaluated once and stored (``run_concurrency``); every
  queue item of the run inherits them and the store enforces the limits when it claims
  (``storage.slots``).
* **throttle**: the run's first item becomes claimable at the start time GCRA gives it
  (``engine.throttle``).
* **priority**: the first item's ``available_at`` moves earlier by the priority's seconds (later
  for a negative priority), so under a backlog it is claimed ahead of runs created up to that
  long after it. A throttled run keeps its throttle time: priority never beats the rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from stepline.engine import flow_keys, throttle
from stepline.engine import registry as registry_
from stepline.storage import records, store


async def prepare(
    tx: store.Transaction,
    started: Sequence[tuple[registry_.FunctionSpec, records.RunRecord, records.QueueItem]],
    now: int,
) -> None:
    """Apply flow control to new runs and their first items, before the items are enqueued."""
    keys: list[records.RunConcurrency] = []
    for fn, run, item in started:
        flow = fn.limits
        if not flow.active:
            continue
        event = run.events[0] if run.events else {}
        run_keys = flow_keys.run_concurrency(run.id, fn.id, flow, event)
        if run_keys is not None:
            keys.append(run_keys)
        start = now
        if flow.throttle is not None:
            start = await throttle.start_at(tx, fn.id, flow.throttle, event, now)
        shift = flow_keys.priority_ms(flow.priority, event) if flow.priority is not None else 0
        item.available_at = now - shift if start <= now else max(start, now - shift)
    if keys:
        await tx.insert_run_concurrency(keys)
