"""The SQLite backend of ``Store``: stdlib ``sqlite3`` in WAL mode.

Two connections to one file: a writer, used under an ``asyncio.Lock`` with ``BEGIN IMMEDIATE``
so that one write transaction runs at a time, and a reader in autocommit mode whose every
statement sees the last committed state (a WAL snapshot). Statements run on the event-loop
thread: SQLite answers in microseconds, cheaper than a hop to a worker thread. The WAL is
checkpointed by a thread of its own (``checkpoint``), never by a commit on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, LiteralString

from stepline import errors
from stepline.storage import migrate, pages, purge, queries, records, slots, task_plan
from stepline.storage.sqlite import checkpoint, rows

_MIN_VERSION = (3, 35, 0)
"""``RETURNING`` (used to claim) arrived in SQLite 3.35."""

_PRAGMAS: tuple[LiteralString, ...] = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    "PRAGMA wal_autocheckpoint=0",  # checkpoint.Checkpointer does it, off the event loop
)

_CREATE_MIGRATIONS: LiteralString = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
)


class _Refused(Exception):
    """Ends ``create_task``'s transaction with a rollback, carrying what the store refused."""

    def __init__(self, outcome: records.TaskPlanOutcome) -> None:
        super().__init__("task refused")
        self.outcome = outcome


class _Db:
    """One connection running the named queries of ``queries.sql``; errors become ``StorageError``."""

    def __init__(self, conn: sqlite3.Connection, named: Mapping[str, LiteralString]) -> None:
        self.conn = conn
        self._named = named

    def execute(self, name: str, params: Mapping[str, Any] | None = None) -> sqlite3.Cursor:
        try:
            return self.conn.execute(self._named[name], params or {})
        except sqlite3.Error as exc:
            raise errors.StorageError(f"SQLite query {name!r} failed: {exc}") from exc

    def execute_many(self, name: str, params: Sequence[Mapping[str, Any]]) -> None:
        try:
            self.conn.executemany(self._named[name], params)
        except sqlite3.Error as exc:
            raise errors.StorageError(f"SQLite query {name!r} failed: {exc}") from exc

    def one(self, name: str, params: Mapping[str, Any] | None = None) -> rows.Row | None:
        found = self.execute(name, params).fetchall()
        return found[0] if found else None

    def all(self, name: str, params: Mapping[str, Any] | None = None) -> list[rows.Row]:
        return self.execute(name, params).fetchall()

    def count(self, name: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a write and return how many rows it changed."""
        return self.execute(name, params).rowcount

    def control(self, statement: LiteralString) -> None:
        """``BEGIN IMMEDIATE``, ``COMMIT`` or ``ROLLBACK``."""
        try:
            self.conn.execute(statement)
        except sqlite3.Error as exc:
            raise errors.StorageError(f"SQLite {statement} failed: {exc}") from exc

    def rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already done so."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def commit(self) -> None:
        try:
            self.control("COMMIT")
        except BaseException:
            self.rollback()
            raise


class SQLiteTransaction:
    """A ``Transaction`` on the writer connection; valid only inside its ``async with`` block."""

    def __init__(self, db: _Db) -> None:
        self._db = db
        self._open = True
        self.wakes = False
        """Whether the transaction enqueued or rescheduled work (waiters wake on commit)."""

    def finish(self) -> None:
        self._open = False

    def _live(self) -> _Db:
        if not self._open:
            raise errors.StorageError(
                "this transaction has ended: use it only inside its `async with store.transaction()` block"
            )
        return self._db

    # events and runs
    async def insert_event(self, event: records.EventRecord) -> None:
        self._live().execute("insert_event", rows.event_params(event))

    async def insert_run(self, run: records.RunRecord) -> None:
        self._live().execute("insert_run", rows.run_params(run))

    async def claim_idempotency_key(self, function_id: str, key: str, run_id: str, now: int, expires_at: int) -> bool:
        params = {"function_id": function_id, "key": key, "run_id": run_id, "expires_at": expires_at, "now": now}
        return self._live().count("insert_idempotency_key", params) == 1

    async def claim_idempotency_keys(self, claims: Sequence[records.IdempotencyClaim], now: int) -> list[bool]:
        return [
            await self.claim_idempotency_key(claim.function_id, claim.key, claim.run_id, now, claim.expires_at)
            for claim in claims
        ]

    async def insert_events(self, events: Sequence[records.EventRecord]) -> None:
        self._live().execute_many("insert_event", [rows.event_params(event) for event in events])

    async def insert_events_checking(
        self, events: Sequence[records.EventRecord], functions: records.FunctionsFingerprint
    ) -> bool:
        await self.insert_events(events)
        return await self.functions_fingerprint() == functions

    async def insert_runs(self, runs: Sequence[records.RunRecord]) -> None:
        self._live().execute_many("insert_run", [rows.run_params(run) for run in runs])

    async def record_checkpoint(self, step: records.StepRecord) -> int | None:
        db = self._live()
        row = db.one("record_checkpoint", rows.step_params(step))
        if row is None:
            return None
        db.execute("next_step_seq", {"id": step.run_id})
        return int(row[0])

    async def lock_run(self, run_id: str) -> records.RunRecord | None:
        row = self._live().one("select_run_for_update", {"id": run_id})
        return None if row is None else rows.run_record(row)

    async def update_run(self, run: records.RunRecord) -> None:
        self._live().execute("update_run", rows.run_params(run))

    # steps
    async def record_step(self, step: records.StepRecord) -> bool:
        return self._live().count("insert_step", rows.step_params(step)) == 1

    # queue
    async def enqueue(self, item: records.QueueItem) -> None:
        self._live().execute("enqueue_item", rows.item_params(item))
        self.wakes = True

    async def enqueue_many(self, items: Sequence[records.QueueItem]) -> None:
        if items:
            self._live().execute_many("enqueue_item", [rows.item_params(item) for item in items])
            self.wakes = True

    async def complete_item(self, item_id: str, claims: int) -> bool:
        found = self._live().all("complete_item", {"id": item_id, "claims": claims})
        self._release(found)
        return len(found) == 1

    async def reschedule_item(self, item: records.QueueItem, claims: int) -> bool:
        params = {
            "id": item.id,
            "claims": claims,
            "kind": item.kind.value,
            "step_id": item.step_id,
            "attempt": item.attempt,
            "available_at": item.available_at,
            "payload": rows.encode(item.payload),
        }
        found = self._live().all("reschedule_item", params)
        self._release(found, slot_known=False)
        done = len(found) == 1
        self.wakes = self.wakes or (done and item.available_at <= _wake_horizon_ms())
        return done

    async def renew_item(self, item: records.QueueItem, claims: int) -> bool:
        params = {
            "id": item.id,
            "claims": claims,
            "kind": item.kind.value,
            "step_id": item.step_id,
            "attempt": item.attempt,
            "available_at": item.available_at,
            "payload": rows.encode(item.payload),
        }
        return self._live().count("renew_item", params) == 1

    async def delete_item(self, item_id: str) -> None:
        self._release(self._live().all("delete_item", {"id": item_id}))

    async def delete_run_items(self, run_id: str) -> int:
        found = self._live().all("delete_run_items", {"run_id": run_id})
        self._release(found)
        return len(found)

    def _release(self, found: list[rows.Row], *, slot_known: bool = True) -> None:
        """Unpark one parked item per concurrency slot the rows freed (``storage.slots``); the
        one writer serialises this with every claim, so no lock is needed."""
        if not found or all(row[0] is None for row in found):
            return  # the common case: no concurrency limit
        db = self._live()
        for key, count in sorted(slots.released(found, slot_known=slot_known).items()):
            if db.count("unpark_items", {"key": key, "limit": count}):
                self.wakes = True

    # flow control
    async def insert_run_concurrency(self, keys: Sequence[records.RunConcurrency]) -> None:
        self._live().execute_many("insert_run_concurrency", [rows.run_concurrency_params(row) for row in keys])

    async def advance_throttle(self, key: str, now: int, interval_ms: int) -> int:
        row = self._live().one("advance_throttle", {"key": key, "now": now, "interval": interval_ms})
        assert row is not None  # an upsert with RETURNING always returns its row
        return int(row[0])

    # pauses
    async def insert_pause(self, pause: records.PauseRecord) -> None:
        self._live().execute("insert_pause", rows.pause_params(pause))

    async def pauses_for_event(self, event_name: str) -> list[records.PauseRecord]:
        found = self._live().all("pauses_for_event", {"event_name": event_name})
        return [rows.pause_record(row) for row in found]

    async def pause_by_correlation(self, correlation_id: str) -> records.PauseRecord | None:
        row = self._live().one("pause_by_correlation", {"correlation_id": correlation_id})
        return None if row is None else rows.pause_record(row)

    async def get_pause(self, pause_id: str) -> records.PauseRecord | None:
        row = self._live().one("select_pause", {"id": pause_id})
        return None if row is None else rows.pause_record(row)

    async def delete_pause(self, pause_id: str) -> bool:
        return self._live().count("delete_pause", {"id": pause_id}) == 1

    async def delete_run_pauses(self, run_id: str) -> int:
        return self._live().count("delete_run_pauses", {"run_id": run_id})

    # flow control at ingest
    async def lock_flow_key(self, function_id: str, kind: str, key: str) -> records.FlowKeyRecord:
        row = self._live().one("lock_flow_key", {"function_id": function_id, "kind": kind, "key": key})
        assert row is not None  # an upsert with RETURNING always returns the row
        return records.FlowKeyRecord(*row)

    async def update_flow_key(self, row: records.FlowKeyRecord) -> None:
        self._live().execute("update_flow_key", dataclasses.asdict(row))

    async def set_run_events(self, run_id: str, events: Sequence[dict[str, records.JSON]]) -> None:
        self._live().execute("set_run_events", {"id": run_id, "events": rows.encode(list(events))})

    # functions and cron
    async def upsert_function(self, function: records.FunctionRecord) -> None:
        self._live().execute("upsert_function", rows.function_params(function))

    async def delete_functions_except(self, app_id: str, function_ids: Sequence[str]) -> None:
        params = {"function_ids": rows.encode(list(function_ids)), "app_id": app_id}
        db = self._live()
        db.execute("delete_crons_except", params)
        db.execute("delete_functions_except", params)

    async def upsert_app(self, app: records.AppRecord) -> None:
        self._live().execute("upsert_app", rows.app_params(app))

    async def get_cron(self, function_id: str) -> records.CronRecord | None:
        row = self._live().one("select_cron", {"function_id": function_id})
        return None if row is None else rows.cron_record(row)

    async def upsert_cron(self, cron: records.CronRecord) -> None:
        self._live().execute("upsert_cron", rows.cron_params(cron))

    async def delete_crons_except(self, function_ids: Sequence[str], app_id: str) -> None:
        params = {"function_ids": rows.encode(list(function_ids)), "app_id": app_id}
        self._live().execute("delete_crons_except", params)

    async def advance_cron(self, function_id: str, expected_next: int, new_next: int) -> bool:
        params = {"function_id": function_id, "expected_next": expected_next, "new_next": new_next}
        return self._live().count("advance_cron", params) == 1

    # tasks
    async def functions_fingerprint(self) -> records.FunctionsFingerprint:
        row = self._live().one("functions_fingerprint")
        assert row is not None  # an aggregate returns one row
        return records.FunctionsFingerprint(int(row[0]), int(row[1]), int(row[2]))

    async def create_task(self, plan: records.TaskPlan) -> records.TaskPlanOutcome:
        return await task_plan.create_stepwise(self, plan)

    async def insert_task(self, task: records.TaskRecord) -> bool:
        return self._live().count("insert_task", rows.task_params(task)) == 1

    async def lock_task_id(self, task_id: str) -> None:
        self._live().execute("lock_task_id", {"id": task_id})

    async def lock_task(self, task_id: str) -> records.TaskRecord | None:
        row = self._live().one("select_task_for_update", {"id": task_id})
        return None if row is None else rows.task_record(row)

    async def update_task(self, task: records.TaskRecord) -> None:
        self._live().execute("update_task", rows.task_params(task))

    async def start_task(self, task_id: str, now: int) -> None:
        self._live().execute("start_task", {"id": task_id, "now": now})

    async def due_pending_tasks(self, now: int, limit: int) -> list[records.TaskRecord]:
        return [rows.task_record(row) for row in self._live().all("due_pending_tasks", {"now": now, "limit": limit})]

    async def consume_quota(self, request: records.QuotaRequest, task_id: str, now: int) -> int | None:
        db = self._live()
        params = {"feature": request.feature, "owner": request.owner, "since": now - request.window_ms}
        db.execute("lock_quota", params)
        row = db.one("count_quota_uses", params)
        used, oldest = (0, None) if row is None else (int(row[0]), row[1])
        if used >= request.limit:
            return max(1, int(oldest) + request.window_ms - now) if oldest is not None else request.window_ms
        use = {"feature": request.feature, "owner": request.owner, "task_id": task_id, "used_at": now}
        db.execute("insert_quota_use", use | {"expires_at": now + request.window_ms})
        return None

    async def refund_quota(self, task_id: str) -> None:
        self._live().execute("delete_quota_uses", {"task_id": task_id})


class SQLiteStore(purge.PurgeVerbs):
    """A ``Store`` on one SQLite file. Obtain it with ``storage.open_store("sqlite:///...")``."""

    backend: str = "sqlite"

    def __init__(self, path: Path, writer: _Db, reader: _Db) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._work = asyncio.Event()
        self._checkpointer = checkpoint.Checkpointer(path, self._lock)

    @classmethod
    async def open(cls, path: Path, migrate: bool = True) -> SQLiteStore:
        """Open (creating if needed) the database file at ``path``; apply pending migrations."""
        if sqlite3.sqlite_version_info < _MIN_VERSION:
            raise errors.StorageError(
                f"Stepline needs SQLite 3.35 or newer, but Python's sqlite3 uses {sqlite3.sqlite_version}: "
                "use a Python built against a newer SQLite"
            )
        named = queries.load_queries("sqlite")
        writer = _connect(path, named)
        reader: _Db | None = None
        try:
            if migrate:
                _migrate(writer, path)
            else:
                _check_schema(writer, path)
            reader = _connect(path, named)
            opened = cls(path, writer, reader)
            opened._checkpointer.start()
        except BaseException:
            if reader is not None:
                reader.conn.close()
            writer.conn.close()
            raise
        return opened

    async def close(self) -> None:
        await self._checkpointer.close()
        self._reader.conn.close()
        self._writer.conn.close()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[_Db]:
        """One write transaction on the writer connection: commit on clean exit, else roll back."""
        # Statements run on the loop thread and never block on I/O the loop could use, so without
        # this yield a busy executor would process item after item without letting other tasks
        # (web handlers sharing the loop, other runs) in between.
        await asyncio.sleep(0)
        async with self._lock:
            self._writer.control("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.rollback()
                raise
            self._writer.commit()
        self._checkpointer.written()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        async with self._write() as db:
            tx = SQLiteTransaction(db)
            try:
                yield tx
            finally:
                tx.finish()
        if tx.wakes:
            self._work.set()

    # claiming
    async def claim(self, now: int, limit: int, lease_until: int) -> list[records.QueueItem]:
        if limit <= 0:
            return []
        items: list[records.QueueItem] = []
        started = time.monotonic()
        while len(items) < limit:
            room = limit - len(items)
            # One write transaction per round: while a claim parks a busy key's backlog, round
            # after round, other writers get the database in between.
            async with self._write() as db:
                found = db.all("claim_items", {"now": now, "limit": room, "lease_until": lease_until})
                claimed = [slots.claimed(rows.item_record(row[:9]), _flow_columns(row)) for row in found]
                if not any(claim.tentative for claim in claimed):
                    items.extend(claim.item for claim in claimed)
                    break
                # RETURNING order is arbitrary: oldest ready first, then ids (ULIDs: creation order).
                claimed.sort(key=lambda claim: (claim.ready_at, claim.item.id))
                parked = _admit(db, claimed, now, room, items)
            if not parked or slots.enough(items, started):
                break
            # The head of the queue was a busy key's backlog, now parked: look past it. Rounds stay
            # at the room left (PostgreSQL's grow): an item claimed beyond the room could not be
            # given back here, as SQLite's RETURNING shows the leased row, not its ready time.
        items.sort(key=lambda item: item.id)
        return items

    async def claim_and_peek(self, now: int, limit: int, lease_until: int) -> records.ClaimedItems:
        items = await self.claim(now, limit, lease_until)  # in process: the peek costs no round trip
        return records.ClaimedItems(items, await self.next_available_at())

    async def extend_leases(self, leases: Sequence[tuple[str, int]], lease_until: int) -> set[str]:
        if not leases:
            return set()
        held: set[str] = set()
        async with self._write() as db:
            for item_id, claims in leases:
                params = {"id": item_id, "claims": claims, "lease_until": lease_until}
                if db.count("extend_lease", params) == 1:
                    held.add(item_id)
        return held

    async def next_available_at(self) -> int | None:
        row = self._reader.one("next_available_at")
        return None if row is None or row[0] is None else int(row[0])

    async def due_crons(self, now: int) -> list[records.CronRecord]:
        return [rows.cron_record(row) for row in self._reader.all("due_crons", {"now": now})]

    # reads
    async def get_run(self, run_id: str) -> records.RunRecord | None:
        row = self._reader.one("select_run", {"id": run_id})
        return None if row is None else rows.run_record(row)

    async def list_steps(self, run_id: str) -> list[records.StepRecord]:
        return [rows.step_record(row) for row in self._reader.all("select_steps", {"run_id": run_id})]

    async def get_run_with_steps(self, run_id: str) -> tuple[records.RunRecord, list[records.StepRecord]] | None:
        run = await self.get_run(run_id)
        return None if run is None else (run, await self.list_steps(run_id))

    async def get_event(self, internal_id: str) -> records.EventRecord | None:
        row = self._reader.one("select_event", {"internal_id": internal_id})
        return None if row is None else rows.event_record(row)

    async def runs_for_event(self, internal_id: str) -> list[records.RunRecord]:
        return [rows.run_record(row) for row in self._reader.all("runs_for_event", {"event_id": internal_id})]

    async def mark_run_started(self, run_id: str, now: int) -> None:
        async with self._write() as db:
            row = db.one("mark_run_started", {"id": run_id, "now": now})
            if row is not None and row[0] is not None:
                db.execute("start_task", {"id": row[0], "now": now})

    async def create_task(self, plan: records.TaskPlan) -> records.TaskPlanOutcome:
        try:
            async with self.transaction() as tx:
                outcome = await tx.create_task(plan)
                if outcome.created is None:
                    raise _Refused(outcome)  # rolls back what a refusal wrote (an event without runs)
        except _Refused as refused:
            return refused.outcome
        return outcome

    async def get_task(self, task_id: str) -> records.TaskRecord | None:
        row = self._reader.one("select_task", {"id": task_id})
        return None if row is None else rows.task_record(row)

    async def list_tasks(
        self,
        *,
        owner: str | None = None,
        status: records.TaskStatus | None = None,
        cursor: str | None = None,
        limit: int = 50,
        kind: str | None = None,
    ) -> list[records.TaskRecord]:
        if limit <= 0:
            return []
        name, params = pages.task_page(owner, status, cursor, limit, kind)
        return [rows.task_record(row) for row in self._reader.all(name, params)]

    async def set_task_progress(self, task_id: str, progress: float, message: str | None, now: int) -> bool:
        params = {"id": task_id, "progress": progress, "message": message, "now": now}
        async with self._write() as db:
            return db.count("task_progress", params) == 1

    async def next_pending_deadline(self) -> int | None:
        row = self._reader.one("next_pending_deadline")
        return None if row is None or row[0] is None else int(row[0])

    async def task_changes(self, task_id: str, after_version: int, limit: int = 100) -> list[records.TaskRecord]:
        params = {"task_id": task_id, "after": after_version, "limit": limit}
        return [records.task_from_json(json.loads(row[0])) for row in self._reader.all("select_task_changes", params)]

    async def prune_task_changes(self, before: int) -> int:
        async with self._write() as db:
            return db.count("delete_task_changes", {"before": before})

    async def list_apps(self) -> list[records.AppRecord]:
        return [rows.app_record(row) for row in self._reader.all("select_apps")]

    async def get_app(self, app_id: str) -> records.AppRecord | None:
        row = self._reader.one("select_app", {"id": app_id})
        return None if row is None else rows.app_record(row)

    async def list_functions(self) -> list[records.FunctionRecord]:
        return [rows.function_record(row) for row in self._reader.all("select_functions")]

    async def count_queue(self) -> int:
        row = self._reader.one("count_queue")
        return 0 if row is None else int(row[0])

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
        if limit <= 0:
            return []
        id_range = records.IdRange.page(cursor, created_after, created_before)
        name, params = pages.run_page(function_id, status, event_id, id_range, limit)
        return [rows.run_record(row) for row in self._reader.all(name, params)]

    async def list_events(
        self, *, name: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> list[records.EventRecord]:
        if limit <= 0:
            return []
        query, params = pages.event_page(name, cursor, limit)
        return [rows.event_record(row) for row in self._reader.all(query, params)]

    async def events_by_public_id(self, public_id: str, limit: int = 20) -> list[records.EventRecord]:
        found = self._reader.all("events_by_public_id", {"id": public_id, "limit": max(0, limit)})
        return [rows.event_record(row) for row in found]

    # the dashboard's overview
    async def runs_per_minute(self, since: int) -> list[records.MinuteCount]:
        started = self._reader.all("runs_started_per_minute", {"lower": records.IdRange.floor(since)})
        ended = self._reader.all("runs_ended_per_minute", {"since": since})
        return [records.MinuteCount(int(row[0]), str(row[1]), int(row[2])) for row in [*started, *ended]]

    async def step_timings(self, since: int, limit: int) -> list[records.StepTiming]:
        found = self._reader.all("step_timings_since", {"since": since, "limit": max(0, limit)})
        return [records.StepTiming(int(row[0]), int(row[1])) for row in found]

    async def ready_queue(self, now: int) -> records.ReadyQueue:
        row = self._reader.one("ready_queue", {"now": now})
        if row is None:
            return records.ReadyQueue(0, None)
        return records.ReadyQueue(int(row[0]), None if row[1] is None else int(row[1]))

    async def run_pauses(self, run_id: str) -> list[records.PauseRecord]:
        return [rows.pause_record(row) for row in self._reader.all("run_pauses", {"run_id": run_id})]

    async def run_queue_items(self, run_id: str) -> list[records.QueueItem]:
        return [rows.item_record(row) for row in self._reader.all("run_queue_items", {"run_id": run_id})]

    # retention: the purge_* verbs come from purge.PurgeVerbs
    async def _purge(self, plan: purge.Plan, params: dict[str, Any], limit: int) -> records.Purged:
        """One batch of ``plan`` in one write transaction of the single writer: other writers
        get the database between batches."""
        deleted: dict[str, int] = {}
        async with self._write() as db:
            if plan.select is not None:
                ids = [str(row[0]) for row in db.all(plan.select, params)]
                if not ids:
                    return records.Purged({}, full=False)
                params = {"ids": rows.encode(ids)}
            for table, name in plan.deletes:
                deleted[table] = db.count(name, params)
        return purge.purged(plan, deleted, limit)

    # wake-ups
    async def wait_for_work(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except TimeoutError:
            return
        self._work.clear()


def _connect(path: Path, named: Mapping[str, LiteralString]) -> _Db:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise errors.StorageError(f"cannot open SQLite database {path}: {exc}") from exc
    try:
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        # When the log restarts after a burst, the writer cuts the -wal file back to this size.
        conn.execute(f"PRAGMA journal_size_limit={checkpoint.JOURNAL_SIZE_LIMIT:d}")
    except sqlite3.Error as exc:
        conn.close()
        raise errors.StorageError(f"cannot open SQLite database {path}: {exc}") from exc
    return _Db(conn, named)


def _migrate(db: _Db, path: Path) -> None:
    """Apply the migrations not yet recorded, each in its own ``BEGIN IMMEDIATE`` transaction."""
    known = migrate.load_migrations("sqlite")
    try:
        db.conn.execute(_CREATE_MIGRATIONS)
        applied = {row[0] for row in db.all("select_migrations")}
    except (sqlite3.Error, errors.StorageError) as exc:
        raise errors.MigrationError(f"cannot read the schema version of SQLite database {path}: {exc}") from exc
    newer = sorted(applied - {m.version for m in known})
    if newer:
        raise errors.MigrationError(
            f"SQLite database {path} has schema version {newer[-1]}, newer than this Stepline knows "
            f"({len(known)}): upgrade Stepline"
        )
    for migration in known:
        if migration.version not in applied:
            _apply(db, path, migration)


def _check_schema(db: _Db, path: Path) -> None:
    try:
        found = db.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        applied = {int(row[0]) for row in db.all("select_migrations")} if found.fetchall() else set()
    except (sqlite3.Error, errors.StorageError) as exc:
        raise errors.MigrationError(f"cannot read the schema version of SQLite database {path}: {exc}") from exc
    migrate.require_current(applied, migrate.load_migrations("sqlite"), str(path))


def _apply(db: _Db, path: Path, migration: migrate.Migration) -> None:
    try:
        db.control("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while we waited for the write lock.
            if migration.version not in {row[0] for row in db.all("select_migrations")}:
                for statement in _statements(migration.sql):
                    db.conn.execute(statement)
                params = {"version": migration.version, "name": migration.name, "applied_at": _now_ms()}
                db.execute("insert_migration", params)
        except BaseException:
            db.rollback()
            raise
        db.commit()
    except (sqlite3.Error, errors.StorageError) as exc:
        raise errors.MigrationError(
            f"cannot apply migration {migration.name} to SQLite database {path}: {exc}"
        ) from exc


def _statements(script: str) -> list[str]:
    """Split a migration into single statements, cutting only where SQLite sees a complete one
    (so semicolons inside strings, comments and trigger bodies are kept)."""
    found: list[str] = []
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            found.append(script[start : index + 1])
            start = index + 1
    tail = script[start:]
    if tail.strip():
        found.append(tail)  # comments only (a no-op) or a last statement without ";"
    return found


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_FLOW_COLUMNS = ("ckey1", "climit1", "ckey2", "climit2", "ready_at")


def _flow_columns(row: rows.Row) -> dict[str, Any]:
    return dict(zip(_FLOW_COLUMNS, row[9:], strict=True))


def _admit(db: _Db, claimed: list[slots.Claimed], now: int, room: int, into: list[records.QueueItem]) -> int:
    """Admit, park or give back claimed items (``storage.slots``) in the claim's transaction;
    appends the admitted items to ``into`` and returns how many were parked."""
    keys = slots.keys_of(claimed)
    used = {str(row[0]): int(row[1]) for row in db.all("count_slots", {"keys": rows.encode(keys), "now": now})}
    decision = slots.decide(claimed, used, room)
    tentative = [claim for claim in decision.admit if claim.tentative]
    if tentative:
        db.execute("admit_items", _claims_params(tentative))
    if decision.park:
        blocking = {"parked": slots.PARKED_AT, "blocking_keys": rows.encode(decision.blocked_on)}
        db.execute("park_items", _claims_params(decision.park) | blocking)
    if decision.give_back:
        db.execute("return_items", _claims_params(decision.give_back))
    for key, count in sorted(decision.top_up.items()):
        db.execute("unpark_items", {"key": key, "limit": count})
    into.extend(claim.item for claim in decision.admit)
    return len(decision.park)


def _claims_params(claimed: list[slots.Claimed]) -> dict[str, Any]:
    return {
        "ids": rows.encode([claim.item.id for claim in claimed]),
        "claims": rows.encode([claim.item.claims for claim in claimed]),
        "ready_ats": rows.encode([claim.ready_at for claim in claimed]),
    }


def _wake_horizon_ms() -> int:
    """Items due later than this need no wake-up now: executors sleep until the next due item."""
    return time.time_ns() // 1_000_000 + 1_000
