"""The PostgreSQL ``Transaction``: the store's write verbs on one connection inside a transaction.

``PostgresStore.transaction()`` runs them on a pooled connection; ``borrowed_transaction`` runs
them on the application's own connection, inside its own transaction (``stepline.tasks.enqueue_in``).
Also here: what every PostgreSQL module shares to name a database in errors without leaking its
password, and to turn driver errors into ``StorageError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from stepline import errors
from stepline.storage import queries, records, slots
from stepline.storage.postgres import rows

NOTIFY: LiteralString = "NOTIFY stepline_work"
BEGIN: LiteralString = "BEGIN"
COMMIT: LiteralString = "COMMIT"
NOTIFY_AND_COMMIT: LiteralString = "NOTIFY stepline_work; COMMIT"
"""The end of a transaction that scheduled work: its ``NOTIFY`` and its ``COMMIT`` in one
round trip (a query without parameters goes by the simple protocol, which takes several
statements; a failing ``NOTIFY`` stops the ``COMMIT``)."""
LOCK_KEYS: LiteralString = """
SELECT pg_advisory_xact_lock(h)
FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(%(keys)s::text[]) AS k ORDER BY h) AS locks
"""
"""Lock concurrency keys until the transaction ends, in one order (by hash) so that two
transactions locking overlapping keys cannot deadlock. Claimers hold them while counting and
admitting; releasers while unparking (see ``storage.slots``)."""
CREATE_TASK: LiteralString = "SELECT stepline_create_task(%(plan)s) AS outcome"
"""``Transaction.create_task`` in one round trip: the function of migration 0009. Not in
``queries.sql``, whose names both backends define; SQLite composes the verbs instead."""
# The password of a URL's user-info runs to the *last* "@" before the host: it may hold "@".
_URL_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^/?#]*@")
_PARAMETER_PASSWORD = re.compile(r"(\bpassword=)[^&\s]*", re.IGNORECASE)  # "?password=" or key=value

Connection = psycopg.AsyncConnection[DictRow]
T = TypeVar("T")
Replace = Callable[[psycopg.AsyncConnection[Any]], Awaitable[psycopg.AsyncConnection[Any]]]
"""Given a pooled connection found cut, another one from the pool (``PostgresTransaction``)."""


def describe(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string: what errors show instead of the URL,
    which may hold a password."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise errors.StorageError(
            f"invalid PostgreSQL URL {scrub(conninfo, conninfo)!r}: {scrub(str(exc), conninfo).strip()}; "
            "expected postgresql://user[:password]@host[:port]/database"
        ) from None
    host = str(parts.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(parts.get("port") or os.environ.get("PGPORT") or "5432")
    dbname = str(parts.get("dbname") or os.environ.get("PGDATABASE") or parts.get("user") or "")
    return f"{host}:{port}/{dbname}"


def scrub(text: str, conninfo: str) -> str:
    """``text`` with any password of ``conninfo`` masked."""
    text = _PARAMETER_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
    with contextlib.suppress(psycopg.Error):
        password = conninfo_to_dict(conninfo).get("password")
        if password:
            # Only where it stands alone: a password "p" must not mask every "p" of the message.
            text = re.sub(rf"(?<!\w){re.escape(str(password))}(?!\w)", "***", text)
    return text


@contextlib.contextmanager
def translated(what: str, where: str) -> Iterator[None]:
    """Re-raise a driver error as ``StorageError`` naming the operation and the database."""
    try:
        yield
    except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as exc:
        # Bad data, not a sick database: say what was refused, and nothing of where it lives.
        reason = exc.diag.message_primary or type(exc).__name__
        raise errors.StorageValueError(f"the database refused a value: {reason}") from exc
    except psycopg.Error as exc:
        raise errors.StorageError(f"PostgreSQL at {where}: {what} failed: {exc}") from exc


class PostgresTransaction:
    """The ``Transaction`` verbs on one pooled connection inside ``BEGIN ... COMMIT``.

    With ``replace`` (the store's own transactions), ``BEGIN`` is not sent until the first
    statement, and then in one pipeline with it: one round trip instead of two, on every
    transaction the executor makes (five per run of three steps). If that round trip finds the
    connection cut (PostgreSQL restarted), nothing on it was done, and both go again on the
    connection ``replace`` hands over. The store then commits on ``connection``, if ``begun``.
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        sql: dict[str, LiteralString],
        where: str,
        *,
        replace: Replace | None = None,
    ) -> None:
        # Any connection will do, whatever its row factory: cursors here ask for dict rows
        # themselves (``tasks.enqueue_in`` runs these verbs on the application's own connection).
        self._conn = conn
        self._replace = replace
        self.begun = replace is None
        """``BEGIN`` was sent (always, on a connection whose transaction the caller began)."""
        self._sql = sql
        self._where = where
        self.where = where
        """``host:port/dbname``, for error messages."""
        self.wakes = False
        """Set once the transaction enqueued or rescheduled an item: notify on commit."""
        self.notified = False
        """A ``NOTIFY`` is already queued for this transaction's commit (``stepline_create_task``
        sends its own): no second statement is needed for ``wakes``."""

    @property
    def connection(self) -> psycopg.AsyncConnection[Any]:
        """The connection the transaction is on (another than the first if that was cut)."""
        return self._conn

    async def _send(self, send: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``send``'s statements on the transaction's connection; the first ones with ``BEGIN``."""
        if self.begun:
            return await send(self._conn)
        self.begun = True
        try:
            return await self._begin_with(send)
        except (psycopg.OperationalError, errors.StorageError):  # some sends translate their errors
            if self._replace is None or not self._conn.broken:
                raise
        self._conn = await self._replace(self._conn)
        return await self._begin_with(send)

    async def _begin_with(self, send: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        # Not prepared, as the store's COMMIT: psycopg would prepare it after five uses.
        async with self._conn.pipeline():
            await self._conn.execute(BEGIN, prepare=False)
            return await send(self._conn)

    async def _execute(self, name: str, params: rows.Params) -> psycopg.AsyncCursor[DictRow]:
        sql = self._sql[name]
        with translated(name, self._where):
            return await self._send(lambda conn: conn.cursor(row_factory=dict_row).execute(sql, params))

    async def _fetchone(self, name: str, params: rows.Params) -> rows.Row | None:
        cursor = await self._execute(name, params)
        with translated(name, self._where):
            return await cursor.fetchone()

    async def _fetchall(self, name: str, params: rows.Params) -> list[rows.Row]:
        cursor = await self._execute(name, params)
        with translated(name, self._where):
            return await cursor.fetchall()

    # events and runs

    async def insert_event(self, event: records.EventRecord) -> None:
        await self._execute("insert_event", rows.event_params(event))

    async def insert_run(self, run: records.RunRecord) -> None:
        await self._execute("insert_run", rows.run_params(run))

    async def claim_idempotency_key(self, function_id: str, key: str, run_id: str, now: int, expires_at: int) -> bool:
        params = {
            "function_id": function_id,
            "key": key,
            "run_id": run_id,
            "now": now,
            "expires_at": expires_at,
        }
        cursor = await self._execute("insert_idempotency_key", params)
        return cursor.rowcount == 1

    async def claim_idempotency_keys(self, claims: Sequence[records.IdempotencyClaim], now: int) -> list[bool]:
        if not claims:
            return []
        sql = self._sql["insert_idempotency_key"]

        async def send(conn: psycopg.AsyncConnection[Any]) -> list[psycopg.AsyncCursor[Any]]:
            # One pipeline: every claim is sent before the first answer is awaited.
            async with conn.pipeline():
                return [
                    await conn.execute(
                        sql,
                        {
                            "function_id": claim.function_id,
                            "key": claim.key,
                            "run_id": claim.run_id,
                            "expires_at": claim.expires_at,
                            "now": now,
                        },
                    )
                    for claim in claims
                ]

        with translated("insert_idempotency_key", self._where):
            cursors = await self._send(send)
        return [cursor.rowcount == 1 for cursor in cursors]

    async def _execute_many(self, name: str, params: Sequence[rows.Params]) -> None:
        if not params:
            return
        sql = self._sql[name]

        async def send(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(sql, params)

        with translated(name, self._where):
            await self._send(send)

    async def insert_events(self, events: Sequence[records.EventRecord]) -> None:
        await self._execute_many("insert_event", [rows.event_params(event) for event in events])

    async def insert_events_checking(
        self, events: Sequence[records.EventRecord], functions: records.FunctionsFingerprint
    ) -> bool:
        insert, read = self._sql["insert_event"], self._sql["functions_fingerprint"]
        params = [rows.event_params(event) for event in events]

        async def send(conn: psycopg.AsyncConnection[Any]) -> rows.Row | None:
            async with conn.pipeline():  # the inserts and the read in one round trip
                if params:
                    async with conn.cursor() as cursor:
                        await cursor.executemany(insert, params)
                found = await conn.cursor(row_factory=dict_row).execute(read)
            return await found.fetchone()

        with translated("insert_event", self._where):
            row = await self._send(send)
        assert row is not None  # an aggregate returns one row
        return rows.functions_fingerprint(row) == functions

    async def insert_runs(self, runs: Sequence[records.RunRecord]) -> None:
        await self._execute_many("insert_run", [rows.run_params(run) for run in runs])

    async def record_checkpoint(self, step: records.StepRecord) -> int | None:
        row = await self._fetchone("record_checkpoint", rows.step_params(step))
        return None if row is None else int(row["seq"])

    async def lock_run(self, run_id: str) -> records.RunRecord | None:
        row = await self._fetchone("select_run_for_update", {"id": run_id})
        return None if row is None else rows.run_record(row)

    async def update_run(self, run: records.RunRecord) -> None:
        await self._execute("update_run", rows.run_params(run))

    # steps

    async def record_step(self, step: records.StepRecord) -> bool:
        cursor = await self._execute("insert_step", rows.step_params(step))
        return cursor.rowcount == 1

    # queue

    async def enqueue(self, item: records.QueueItem) -> None:
        await self._execute("enqueue_item", rows.item_params(item))
        self.wakes = True

    async def enqueue_many(self, items: Sequence[records.QueueItem]) -> None:
        if items:
            await self._execute_many("enqueue_item", [rows.item_params(item) for item in items])
            self.wakes = True

    async def complete_item(self, item_id: str, claims: int) -> bool:
        found = await self._fetchall("complete_item", {"id": item_id, "claims": claims})
        await self._release(found)
        return len(found) == 1

    async def reschedule_item(self, item: records.QueueItem, claims: int) -> bool:
        params = rows.item_params(item)
        params["claims"] = claims
        found = await self._fetchall("reschedule_item", params)
        await self._release(found, slot_known=False)
        moved = len(found) == 1
        self.wakes = self.wakes or (moved and item.available_at <= wake_horizon_ms())
        return moved

    async def renew_item(self, item: records.QueueItem, claims: int) -> bool:
        params = rows.item_params(item)
        params["claims"] = claims
        cursor = await self._execute("renew_item", params)
        return cursor.rowcount == 1

    async def delete_item(self, item_id: str) -> None:
        await self._release(await self._fetchall("delete_item", {"id": item_id}))

    async def delete_run_items(self, run_id: str) -> int:
        found = await self._fetchall("delete_run_items", {"run_id": run_id})
        await self._release(found)
        return len(found)

    async def _release(self, found: list[rows.Row], *, slot_known: bool = True) -> None:
        """Unpark, under the keys' locks, one parked item per concurrency slot the rows freed."""
        if not found or all(row["ckey1"] is None for row in found):
            return  # the common case: no concurrency limit, nothing more to do
        freed = slots.released(found, slot_known=slot_known)
        if not freed:
            return
        unpark = self._sql["unpark_items"]

        async def send(conn: psycopg.AsyncConnection[Any]) -> list[psycopg.AsyncCursor[Any]]:
            async with conn.pipeline():  # the lock and the unparks in one round trip
                await conn.execute(LOCK_KEYS, {"keys": sorted(freed)})
                return [await conn.execute(unpark, {"key": key, "limit": freed[key]}) for key in sorted(freed)]

        with translated("unpark_items", self._where):
            cursors = await self._send(send)
        if any(cursor.rowcount for cursor in cursors):
            self.wakes = True

    # flow control

    async def insert_run_concurrency(self, keys: Sequence[records.RunConcurrency]) -> None:
        await self._execute_many("insert_run_concurrency", [rows.run_concurrency_params(row) for row in keys])

    async def advance_throttle(self, key: str, now: int, interval_ms: int) -> int:
        row = await self._fetchone("advance_throttle", {"key": key, "now": now, "interval": interval_ms})
        assert row is not None  # an upsert with RETURNING always returns its row
        return int(row["tat"])

    # pauses

    async def insert_pause(self, pause: records.PauseRecord) -> None:
        await self._execute("insert_pause", rows.pause_params(pause))

    async def pauses_for_event(self, event_name: str) -> list[records.PauseRecord]:
        return [rows.pause_record(r) for r in await self._fetchall("pauses_for_event", {"event_name": event_name})]

    async def pause_by_correlation(self, correlation_id: str) -> records.PauseRecord | None:
        row = await self._fetchone("pause_by_correlation", {"correlation_id": correlation_id})
        return None if row is None else rows.pause_record(row)

    async def get_pause(self, pause_id: str) -> records.PauseRecord | None:
        row = await self._fetchone("select_pause", {"id": pause_id})
        return None if row is None else rows.pause_record(row)

    async def delete_pause(self, pause_id: str) -> bool:
        cursor = await self._execute("delete_pause", {"id": pause_id})
        return cursor.rowcount == 1

    async def delete_run_pauses(self, run_id: str) -> int:
        cursor = await self._execute("delete_run_pauses", {"run_id": run_id})
        return cursor.rowcount

    # flow control at ingest
    async def lock_flow_key(self, function_id: str, kind: str, key: str) -> records.FlowKeyRecord:
        row = await self._fetchone("lock_flow_key", {"function_id": function_id, "kind": kind, "key": key})
        assert row is not None  # an upsert with RETURNING always returns the row
        return records.FlowKeyRecord(**row)

    async def update_flow_key(self, row: records.FlowKeyRecord) -> None:
        await self._execute("update_flow_key", dataclasses.asdict(row))

    async def set_run_events(self, run_id: str, events: Sequence[dict[str, records.JSON]]) -> None:
        await self._execute("set_run_events", {"id": run_id, "events": rows.events_param(events)})

    # functions and cron

    async def upsert_function(self, function: records.FunctionRecord) -> None:
        await self._execute("upsert_function", rows.function_params(function))

    async def delete_functions_except(self, app_id: str, function_ids: Sequence[str]) -> None:
        params = {"function_ids": list(function_ids), "app_id": app_id}
        await self._execute("delete_crons_except", params)
        await self._execute("delete_functions_except", params)

    async def upsert_app(self, app: records.AppRecord) -> None:
        await self._execute("upsert_app", rows.app_params(app))

    async def get_cron(self, function_id: str) -> records.CronRecord | None:
        row = await self._fetchone("select_cron", {"function_id": function_id})
        return None if row is None else rows.cron_record(row)

    async def upsert_cron(self, cron: records.CronRecord) -> None:
        await self._execute("upsert_cron", rows.cron_params(cron))

    async def delete_crons_except(self, function_ids: Sequence[str], app_id: str) -> None:
        await self._execute("delete_crons_except", {"function_ids": list(function_ids), "app_id": app_id})

    async def advance_cron(self, function_id: str, expected_next: int, new_next: int) -> bool:
        params = {"function_id": function_id, "expected_next": expected_next, "new_next": new_next}
        cursor = await self._execute("advance_cron", params)
        return cursor.rowcount == 1

    # tasks

    async def functions_fingerprint(self) -> records.FunctionsFingerprint:
        row = await self._fetchone("functions_fingerprint", {})
        assert row is not None  # an aggregate returns one row
        return rows.functions_fingerprint(row)

    async def create_task(self, plan: records.TaskPlan) -> records.TaskPlanOutcome:
        outcome = await self._send(lambda conn: create_task(conn, plan, self._where))
        if outcome.started:  # the function notifies at commit; wakes this process's executors too
            self.wakes = self.notified = True
        return outcome

    async def insert_task(self, task: records.TaskRecord) -> bool:
        return (await self._execute("insert_task", rows.task_params(task))).rowcount == 1

    async def lock_task_id(self, task_id: str) -> None:
        await self._execute("lock_task_id", {"id": task_id})

    async def lock_task(self, task_id: str) -> records.TaskRecord | None:
        row = await self._fetchone("select_task_for_update", {"id": task_id})
        return None if row is None else rows.task_record(row)

    async def update_task(self, task: records.TaskRecord) -> None:
        await self._execute("update_task", rows.task_params(task))

    async def start_task(self, task_id: str, now: int) -> None:
        await self._execute("start_task", {"id": task_id, "now": now})

    async def due_pending_tasks(self, now: int, limit: int) -> list[records.TaskRecord]:
        return [
            rows.task_record(row) for row in await self._fetchall("due_pending_tasks", {"now": now, "limit": limit})
        ]

    async def consume_quota(self, request: records.QuotaRequest, task_id: str, now: int) -> int | None:
        params = {"feature": request.feature, "owner": request.owner, "since": now - request.window_ms}
        await self._execute("lock_quota", params)
        row = await self._fetchone("count_quota_uses", params)
        used, oldest = (0, None) if row is None else (int(row["count"]), row["oldest"])
        if used >= request.limit:
            return max(1, int(oldest) + request.window_ms - now) if oldest is not None else request.window_ms
        use = {"feature": request.feature, "owner": request.owner, "task_id": task_id, "used_at": now}
        await self._execute("insert_quota_use", use | {"expires_at": now + request.window_ms})
        return None

    async def refund_quota(self, task_id: str) -> None:
        await self._execute("delete_quota_uses", {"task_id": task_id})


async def create_task(
    conn: psycopg.AsyncConnection[Any], plan: records.TaskPlan, where: str
) -> records.TaskPlanOutcome:
    """``Transaction.create_task`` as one call of ``stepline_create_task`` (migration 0009). On an
    autocommit connection outside a transaction, the call is its own transaction."""
    try:
        with translated("create_task", where):
            cursor = await conn.cursor(row_factory=dict_row).execute(
                CREATE_TASK, {"plan": rows.task_plan_document(plan)}
            )
            row = await cursor.fetchone()
    except errors.StorageError as exc:
        if (
            isinstance(exc.__cause__, psycopg.errors.UniqueViolation)
            and exc.__cause__.diag.constraint_name == "tasks_pkey"
        ):
            # Another transaction created this id after our lock (a concurrent retry).
            raise errors.TaskConflictError(
                f"task id {plan.task.id!r} was created concurrently; retry to read it"
            ) from None
        raise
    assert row is not None  # a function call returns one row
    outcome: dict[str, Any] = row["outcome"]
    if "existing" in outcome:
        return records.TaskPlanOutcome(existing=records.task_from_json(outcome["existing"]))
    if "quota_wait_ms" in outcome:
        return records.TaskPlanOutcome(quota_wait_ms=int(outcome["quota_wait_ms"]))
    if "listeners" in outcome:
        return records.TaskPlanOutcome(listeners=True)
    if "stale" in outcome:
        return records.TaskPlanOutcome(stale=True)
    started = [str(run_id) for run_id in outcome["started"]]
    if plan.runs and not started:
        return records.TaskPlanOutcome()
    task = dataclasses.replace(plan.task, run_id=started[0] if started else None)
    return records.TaskPlanOutcome(created=task, started=started)


@functools.cache
def shared_queries() -> dict[str, LiteralString]:
    """The PostgreSQL queries, loaded once, for transactions on connections outside a store."""
    return queries.load_queries("postgres")


@contextlib.asynccontextmanager
async def borrowed_transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[PostgresTransaction]:
    """The ``Transaction`` verbs inside the application's own transaction on ``conn``.

    ``conn.transaction()`` starts a transaction when none is open and a savepoint inside one, so
    the work commits with the application's transaction (or alone, on an idle connection) and
    rolls back with it. Waiting executors are notified at that commit, not before.
    """
    tx = PostgresTransaction(conn, shared_queries(), describe(conn.info.dsn))
    async with conn.transaction():
        yield tx
        if tx.wakes and not tx.notified:
            with translated("notify", tx.where):
                await conn.execute(NOTIFY)


async def functions_in(tx: PostgresTransaction) -> list[records.FunctionRecord]:
    """Every synced function, read inside ``tx`` (``borrowed_transaction`` has no store to ask)."""
    return [rows.function_record(row) for row in await tx._fetchall("select_functions", {})]


def wake_horizon_ms() -> int:
    """Items due later than this need no wake-up now: executors sleep until the next due item."""
    return time.time_ns() // 1_000_000 + 1_000
