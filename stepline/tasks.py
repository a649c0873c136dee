"""Transactional enqueue: a tracked task written inside the application's own PostgreSQL transaction.

When the app keeps its tables in the same PostgreSQL database as the Stepline server, it can
create its own rows and the task (with the task's event, quota use and runs) atomically::

    async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO resumes (id, owner) VALUES (%s, %s)", (resume_id, user.id))
            task = await stepline.tasks.enqueue_in(
                conn, kind="tailor_resume", owner=user.id,
                event=stepline.Event(name="ai/tailor.resume", data={"resume_id": resume_id}),
            )

A rollback leaves no trace of either; a commit makes both visible together, and wakes the
servers' executors. The server must have migrated the database (``stepline migrate``), and the
function the event triggers must be synced, as for any enqueue.

This module imports the engine and psycopg; plain SDK apps never import it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg

from stepline import errors
from stepline.engine import ingest, registry
from stepline.engine import tasks as engine_tasks
from stepline.sdk import events as events_
from stepline.sdk import tasks as sdk_tasks
from stepline.storage.postgres import transaction as pg_tx

__all__ = ["enqueue_in"]


async def enqueue_in(
    conn: psycopg.AsyncConnection[Any],
    *,
    kind: str,
    owner: str,
    event: events_.Event,
    quota: sdk_tasks.Quota | None = None,
    pending_timeout: timedelta | float | str | None = None,
    id: str | None = None,
) -> sdk_tasks.Task:
    """Create a task, its event, quota use and runs inside ``conn``'s current transaction.

    Raises ``QuotaExceeded`` when the owner has no use left: nothing was written, and the
    application's own transaction carries on.
    """
    if not isinstance(conn, psycopg.AsyncConnection):
        raise errors.ConfigurationError(
            f"enqueue_in needs a psycopg.AsyncConnection (got {type(conn).__name__}): "
            "open one with await psycopg.AsyncConnection.connect(url)"
        )
    body = sdk_tasks.enqueue_body(
        kind=kind, owner=owner, event=event, quota=quota, pending_timeout=pending_timeout, id=id
    )
    request = engine_tasks.request_from_body(body)
    now = time.time_ns() // 1_000_000
    try:
        enqueued = await _enqueue(conn, request, now)
    except errors.StorageError as exc:
        if "does not exist" in str(exc):
            raise errors.StorageError(
                f"{exc}; is this the Stepline server's database, migrated? Run 'stepline migrate' against it"
            ) from exc
        raise
    return sdk_tasks.Task.from_wire(engine_tasks.task_body(enqueued.task))


async def _enqueue(
    conn: psycopg.AsyncConnection[Any], request: engine_tasks.TaskRequest, now: int
) -> engine_tasks.Enqueued:
    if conn.autocommit or conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        # One statement, no savepoint: ``stepline_create_task`` writes nothing when it refuses
        # (quota, a taken id), so the application's transaction carries on either way; alone on
        # an autocommit connection the call is its own transaction.
        tx = pg_tx.PostgresTransaction(conn, pg_tx.shared_queries(), pg_tx.describe(conn.info.dsn))
        ingestor = await _ingestor(tx)
        plan = engine_tasks.plan_task(ingestor, request, now)
        if plan is not None:
            enqueued = engine_tasks.planned_result(request, plan, await tx.create_task(plan))
            if enqueued is not None:
                return enqueued
    async with pg_tx.borrowed_transaction(conn) as tx:
        return await engine_tasks.enqueue(tx, await _ingestor(tx), request, now)


_INGESTORS: dict[str, tuple[tuple[int, int, int], ingest.Ingestor]] = {}
"""Per database (``host:port/dbname``): the synced functions as last read, with the fingerprint
of the ``functions`` table they were read at. A call reads the fingerprint (one small aggregate)
and re-reads and re-parses every function's configuration only when it changed."""


async def _ingestor(tx: pg_tx.PostgresTransaction) -> ingest.Ingestor:
    """What the synced functions would start, as seen in the application's transaction."""
    fingerprint = await pg_tx.functions_fingerprint(tx)
    cached = _INGESTORS.get(tx.where)
    if cached is None or cached[0] != fingerprint:
        # Read after the fingerprint: never older than it, so a later change still shows.
        cached = (fingerprint, ingest.Ingestor(registry.Registry(_specs(await pg_tx.functions_in(tx)))))
        _INGESTORS[tx.where] = cached
    return cached[1]


def _specs(functions: list[Any]) -> list[registry.FunctionSpec]:
    specs = []
    for record in functions:
        try:
            specs.append(registry.FunctionSpec.from_config(record.config, record.app_id))
        except errors.ConfigurationError:
            continue  # the server logs unusable configurations; they trigger nothing here either
    return specs
