"""The ``Store`` protocol: the domain verbs the engine needs, with no SQL in sight.

Two backends implement it (``storage.sqlite`` and ``storage.postgres``). The engine composes
the fine-grained verbs of ``Transaction`` into the atomic state changes the execution
semantics require (record a step *and* enqueue the continuation; insert an event *and* its
runs), so that logic lives once, in the engine, not once per backend.

Concurrency limits are enforced here too, at claim time: see ``storage.slots``.

Leases: claiming an item pushes its ``available_at`` to the lease expiry and increments
``claims``. The holder presents ``claims`` as its token to ``complete_item``,
``reschedule_item`` and ``extend_leases``; a stale holder (its lease expired and someone
else claimed the item) gets ``False`` and must roll its transaction back. One index on
``available_at`` therefore serves both ready items and expired leases.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from stepline.storage import records


class Transaction(Protocol):
    """One atomic unit of work. Created by ``Store.transaction()``; commits on clean exit."""

    # events and runs
    async def insert_event(self, event: records.EventRecord) -> None: ...

    async def insert_run(self, run: records.RunRecord) -> None: ...

    async def claim_idempotency_key(self, function_id: str, key: str, run_id: str, now: int, expires_at: int) -> bool:
        """Reserve ``key`` for ``function_id``; False if an unexpired reservation exists."""
        ...

    async def claim_idempotency_keys(self, claims: Sequence[records.IdempotencyClaim], now: int) -> list[bool]:
        """``claim_idempotency_key`` for many keys at once (one round trip where the backend can)."""
        ...

    async def insert_events(self, events: Sequence[records.EventRecord]) -> None: ...

    async def insert_events_checking(
        self, events: Sequence[records.EventRecord], functions: records.FunctionsFingerprint
    ) -> bool:
        """``insert_events``, and whether the ``functions`` table is still the one ``functions``
        describes (as ``functions_fingerprint``, read in the inserts' round trip). False means the
        caller chose the events' runs from an old copy of the functions: it must roll back."""
        ...

    async def insert_runs(self, runs: Sequence[records.RunRecord]) -> None: ...

    async def record_checkpoint(self, step: records.StepRecord) -> int | None:
        """Record ``step`` at its run's next sequence number (``step.seq`` is ignored); returns that
        number, or None (nothing written) if the run has ended or the step was already recorded."""
        ...

    async def lock_run(self, run_id: str) -> records.RunRecord | None:
        """Read a run and hold it against concurrent change until the transaction ends."""
        ...

    async def update_run(self, run: records.RunRecord) -> None:
        """Write every mutable field of ``run`` (status, times, output, error, pending,
        disable_immediate, request_version, step_count)."""
        ...

    # steps (the memo)
    async def record_step(self, step: records.StepRecord) -> bool:
        """Insert a step result. False, and nothing changed, if that step was already recorded:
        a recorded result is never overwritten."""
        ...

    # queue
    async def enqueue(self, item: records.QueueItem) -> None: ...

    async def enqueue_many(self, items: Sequence[records.QueueItem]) -> None: ...

    async def complete_item(self, item_id: str, claims: int) -> bool:
        """Delete a leased item; False if the lease was lost (``claims`` differs or item gone)."""
        ...

    async def reschedule_item(self, item: records.QueueItem, claims: int) -> bool:
        """Overwrite kind, step_id, attempt, available_at and payload of a leased item
        (``item.id``) and increment its ``claims``, which releases the lease (a heartbeat
        holding the old token can no longer extend it); False if the lease was lost."""
        ...

    async def renew_item(self, item: records.QueueItem, claims: int) -> bool:
        """``reschedule_item`` for a holder that goes on running the item (a checkpoint): the
        token moves on and ``available_at`` becomes the new lease, but a concurrency slot the
        item holds stays held; False if the lease was lost."""
        ...

    async def delete_item(self, item_id: str) -> None:
        """Delete an item whatever its lease (e.g. the timeout of a resumed pause)."""
        ...

    async def delete_run_items(self, run_id: str) -> int:
        """Delete every queue item of a run; returns how many."""
        ...

    # flow control (see storage.slots)
    async def insert_run_concurrency(self, keys: Sequence[records.RunConcurrency]) -> None:
        """Give runs their concurrency keys; call before enqueueing their first items, which
        (like every later item of those runs) inherit them."""
        ...

    async def advance_throttle(self, key: str, now: int, interval_ms: int) -> int:
        """Count one more run start against throttle ``key`` (GCRA); returns the key's new
        theoretical arrival time. Concurrent callers on one key are serialised."""
        ...

    # pauses
    async def insert_pause(self, pause: records.PauseRecord) -> None: ...

    async def pauses_for_event(self, event_name: str) -> list[records.PauseRecord]:
        """Wait pauses awaiting ``event_name``, oldest first."""
        ...

    async def pause_by_correlation(self, correlation_id: str) -> records.PauseRecord | None: ...

    async def get_pause(self, pause_id: str) -> records.PauseRecord | None: ...

    async def delete_pause(self, pause_id: str) -> bool:
        """Delete a pause; True only for the one transaction that deleted it (it wins the resume)."""
        ...

    async def delete_run_pauses(self, run_id: str) -> int: ...

    # flow control at ingest
    async def lock_flow_key(self, function_id: str, kind: str, key: str) -> records.FlowKeyRecord:
        """The flow-control row of ``(function_id, kind, key)``, created empty if missing, held
        against concurrent change until the transaction ends."""
        ...

    async def update_flow_key(self, row: records.FlowKeyRecord) -> None:
        """Write the mutable fields of a row read with ``lock_flow_key``."""
        ...

    async def set_run_events(self, run_id: str, events: Sequence[dict[str, records.JSON]]) -> None:
        """Replace a run's triggering events (a batch that grew)."""
        ...

    # functions and cron
    async def upsert_function(self, function: records.FunctionRecord) -> None: ...

    async def delete_functions_except(self, app_id: str, function_ids: Sequence[str]) -> None:
        """Drop ``app_id``'s functions (and their cron rows) that are not in ``function_ids``."""
        ...

    async def upsert_app(self, app: records.AppRecord) -> None: ...

    async def get_cron(self, function_id: str) -> records.CronRecord | None: ...

    async def upsert_cron(self, cron: records.CronRecord) -> None: ...

    async def delete_crons_except(self, function_ids: Sequence[str], app_id: str) -> None:
        """Drop cron rows of ``app_id``'s functions that are not in ``function_ids``."""
        ...

    async def advance_cron(self, function_id: str, expected_next: int, new_next: int) -> bool:
        """Compare-and-set ``next_fire_at``; True for the one caller that moved it."""
        ...

    # tasks
    async def functions_fingerprint(self) -> records.FunctionsFingerprint:
        """The ``functions`` table in three numbers, as last committed (migration 0013 keeps
        them in a row of their own; on PostgreSQL a transaction's own changes to ``functions``
        count from its commit)."""
        ...

    async def create_task(self, plan: records.TaskPlan) -> records.TaskPlanOutcome:
        """Write a planned task in one step: refuse a plan made from functions that changed since
        (``plan.functions``), take the id's lock (``plan.serialise``), return the
        task if the id exists, take a quota use, insert the event, start each planned run whose
        idempotency key is free (the first drives the task) and insert the task.

        Writes nothing, and says so, when wait or cancel pauses await the event's name (the
        engine matches those) or the id exists or the quota is used up.

        The meaning is ``storage.task_plan.create_stepwise``, which composes the verbs below and
        is what SQLite runs. PostgreSQL runs one server-side function instead (one round trip,
        where the verbs cost about ten): the tracked-task enqueue is on a request's path."""
        ...

    async def insert_task(self, task: records.TaskRecord) -> bool:
        """Insert a task; False, and nothing written, if its id is taken (a retried enqueue)."""
        ...

    async def lock_task_id(self, task_id: str) -> None:
        """Serialise, until the transaction ends, every transaction creating ``task_id`` (an id
        that does not exist yet has no row to lock)."""
        ...

    async def lock_task(self, task_id: str) -> records.TaskRecord | None:
        """Read a task and hold it against concurrent change until the transaction ends."""
        ...

    async def update_task(self, task: records.TaskRecord) -> None:
        """Write status, run_id, progress, message, result, error, times and deadline; bumps ``version``."""
        ...

    async def start_task(self, task_id: str, now: int) -> None:
        """Move a pending task to running; no-op otherwise."""
        ...

    async def due_pending_tasks(self, now: int, limit: int) -> list[records.TaskRecord]:
        """Pending tasks past their deadline, earliest first, locked; other servers skip them."""
        ...

    async def consume_quota(self, request: records.QuotaRequest, task_id: str, now: int) -> int | None:
        """Take one use of ``request``'s quota for ``task_id``: None when taken, else the
        milliseconds until a use frees up (nothing written). Concurrent callers for the same
        feature and owner are serialised, so the limit holds under any concurrency."""
        ...

    async def refund_quota(self, task_id: str) -> None:
        """Give back the quota uses ``task_id`` took."""
        ...


class Store(Protocol):
    """A database holding Stepline's state. Obtain one with ``storage.open_store(url)``."""

    backend: str
    """``"sqlite"`` or ``"postgres"``."""

    async def close(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction that commits when the block exits cleanly and rolls back otherwise."""
        ...

    # claiming (each its own short transaction)
    async def claim(self, now: int, limit: int, lease_until: int) -> list[records.QueueItem]:
        """Lease up to ``limit`` items with ``available_at <= now``, oldest first; never the
        same item to two concurrent callers. Items whose concurrency key is at capacity are
        parked instead (``storage.slots``) and are not returned."""
        ...

    async def claim_and_peek(self, now: int, limit: int, lease_until: int) -> records.ClaimedItems:
        """``claim``, then ``next_available_at``: what an executor needs to know whether to claim
        again and how long to sleep, in one round trip where the backend can."""
        ...

    async def extend_leases(self, leases: Sequence[tuple[str, int]], lease_until: int) -> set[str]:
        """Push the lease of each ``(item_id, claims)`` still held; returns the ids still held."""
        ...

    async def mark_run_started(self, run_id: str, now: int) -> None:
        """Move a queued run to running (its first call is starting), and the pending task it
        drives, if any, with it; no-op otherwise."""
        ...

    async def next_available_at(self) -> int | None:
        """The earliest ``available_at`` in the queue, or None when the queue is empty."""
        ...

    async def due_crons(self, now: int) -> list[records.CronRecord]: ...

    # reads
    async def get_run(self, run_id: str) -> records.RunRecord | None: ...

    async def list_steps(self, run_id: str) -> list[records.StepRecord]:
        """Recorded steps of a run in ``seq`` order."""
        ...

    async def get_run_with_steps(self, run_id: str) -> tuple[records.RunRecord, list[records.StepRecord]] | None:
        """``get_run`` and ``list_steps`` together (None without the run): what an executor reads
        before each call of a run, and ``GET /v1/runs/{id}`` answers. On PostgreSQL both reads go
        in one round trip; the steps are read after the run, so they are at least as recent."""
        ...

    async def get_event(self, internal_id: str) -> records.EventRecord | None: ...

    async def runs_for_event(self, internal_id: str) -> list[records.RunRecord]: ...

    async def count_queue(self) -> int: ...

    async def list_runs(
        self,
        *,
        function_id: str | None = None,
        status: records.RunStatus | None = None,
        event_id: str | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> list[records.RunRecord]:
        """One page of runs, newest (highest id) first, matching every filter given.

        ``event_id`` is the triggering event's ``internal_id``. ``created_after`` (inclusive) and
        ``created_before`` (exclusive) are epoch milliseconds compared with the time in the run's
        ULID id (see ``records.IdRange``). ``cursor`` is the last id of the previous page: the
        page holds only smaller ids. At most ``limit`` runs; each page is one index range scan.
        """
        ...

    async def list_events(
        self, *, name: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> list[records.EventRecord]:
        """One page of stored events, newest (highest ``internal_id``) first; ``cursor`` is the last
        ``internal_id`` of the previous page."""
        ...

    async def events_by_public_id(self, public_id: str, limit: int = 20) -> list[records.EventRecord]:
        """Events whose public ``id`` is ``public_id``, newest first (an id sent again is stored again)."""
        ...

    async def create_task(self, plan: records.TaskPlan) -> records.TaskPlanOutcome:
        """``Transaction.create_task`` in a transaction of its own (one round trip on PostgreSQL)."""
        ...

    async def get_task(self, task_id: str) -> records.TaskRecord | None: ...

    async def list_tasks(
        self,
        *,
        owner: str | None = None,
        status: records.TaskStatus | None = None,
        cursor: str | None = None,
        limit: int = 50,
        kind: str | None = None,
    ) -> list[records.TaskRecord]:
        """One page of tasks, newest first, of ``owner``, in ``status``, of ``kind`` (each when given);
        ``cursor`` is the last id of the previous page."""
        ...

    async def set_task_progress(self, task_id: str, progress: float, message: str | None, now: int) -> bool:
        """Record progress of a pending or running task; False if the task has ended or already
        reported more progress (progress only moves forward)."""
        ...

    async def next_pending_deadline(self) -> int | None:
        """The earliest deadline of a pending task, or None."""
        ...

    async def task_changes(self, task_id: str, after_version: int, limit: int = 100) -> list[records.TaskRecord]:
        """The task as it was after each change with a version above ``after_version``, oldest
        first (kept a few minutes; see ``prune_task_changes``)."""
        ...

    async def prune_task_changes(self, before: int) -> int:
        """Forget changes made before ``before`` (ms); returns how many."""
        ...

    async def list_apps(self) -> list[records.AppRecord]: ...

    async def get_app(self, app_id: str) -> records.AppRecord | None: ...

    async def list_functions(self) -> list[records.FunctionRecord]: ...

    # the dashboard's overview (each reads one index range)
    async def runs_per_minute(self, since: int) -> list[records.MinuteCount]:
        """Runs started, and runs ended by status, per minute since ``since`` (epoch ms)."""
        ...

    async def step_timings(self, since: int, limit: int) -> list[records.StepTiming]:
        """Durations of the ``step.run`` results recorded since ``since``, newest first, at most ``limit``."""
        ...

    async def ready_queue(self, now: int) -> records.ReadyQueue:
        """How many queue items are claimable at ``now``, and the oldest one's ``available_at``."""
        ...

    async def run_pauses(self, run_id: str) -> list[records.PauseRecord]:
        """The waits and invokes a run is paused on (the dashboard shows their targets)."""
        ...

    async def run_queue_items(self, run_id: str) -> list[records.QueueItem]:
        """A run's queued work: sleeps, step retries, its next call."""
        ...

    # retention (``engine.retention``): each call deletes one batch in a transaction of its own;
    # ``full`` says more may wait. Concurrent callers (several servers) take disjoint batches.
    async def purge_runs(self, before: int, limit: int) -> records.Purged:
        """Delete up to ``limit`` runs that ended before ``before`` (epoch ms), oldest first, with
        their steps, queue items, pauses and concurrency keys; never a run whose task has not ended."""
        ...

    async def purge_tasks(self, before: int, limit: int) -> records.Purged:
        """Delete up to ``limit`` tasks that ended before ``before``, with their change log; never
        one that a run which has not ended still drives. Their quota uses stay (``purge_quota_uses``)."""
        ...

    async def purge_events(self, before: int, limit: int) -> records.Purged:
        """Delete up to ``limit`` events received before ``before`` that no remaining run, and no
        task that has not ended, refers to."""
        ...

    async def purge_idempotency_keys(self, now: int, limit: int) -> records.Purged:
        """Delete up to ``limit`` idempotency reservations that expired by ``now``."""
        ...

    async def purge_quota_uses(self, now: int, before: int, limit: int) -> records.Purged:
        """Delete up to ``limit`` quota uses whose own window ended by ``now`` and that were taken
        before ``before`` (so a window lengthened up to the retention period still counts them)."""
        ...

    async def purge_flow_keys(self, now: int, limit: int) -> records.Purged:
        """Delete up to ``limit`` ``flow_keys`` rows that are equivalent to none at ``now`` and ever
        after: a rate limit whose arrival time has passed, a singleton whose run has ended (or none),
        a debounce or batch with no pending run or open batch. Never a row an ingest holds."""
        ...

    async def purge_throttle_keys(self, now: int, limit: int) -> records.Purged:
        """Delete up to ``limit`` ``throttle_keys`` rows whose theoretical arrival time is at or
        before ``now`` (equivalent to none). Never a row an ingest holds."""
        ...

    # wake-ups
    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may be ready, or after ``timeout`` seconds.

        A transaction that enqueued or rescheduled an item wakes waiters when it commits:
        in this process directly, and in other processes through ``NOTIFY`` on PostgreSQL.
        SQLite has no cross-process signal; other processes find the work at their next poll.
        """
        ...
