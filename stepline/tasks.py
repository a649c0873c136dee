"""Tracked tasks written by the app itself in Stepline's PostgreSQL database, not over HTTP.

Two ways, both for apps that can reach the database the Stepline servers use:

- ``connect(client, url)``: ``client.tasks`` goes straight to the database for as long as the
  returned runtime runs (``async with``), one round trip per enqueue instead of a request to a
  server that then writes it (``client.send`` still goes to a server);
- ``enqueue_in(conn, ...)``: one task inside the application's own transaction.

Transactional enqueue: a tracked task written inside the application's own PostgreSQL transaction.

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
from stepline.engine import direct, ingest, registry, synced
from stepline.engine import tasks as engine_tasks
from stepline.sdk import client as client_
from stepline.sdk import events as events_
from stepline.sdk import tasks as sdk_tasks
from stepline.storage import records
from stepline.storage.postgres import transaction as pg_tx

__all__ = ["connect", "enqueue_in"]


def connect(client: client_.Stepline, database_url: str, *, pool_size: int = 4) -> direct.DirectRuntime:
    """Send ``client.tasks`` straight to Stepline's PostgreSQL database (``client.send`` still
    goes to a server).

    Start it for as long as the app serves requests, in its lifespan::

        async with stepline.tasks.connect(client, os.environ["STEPLINE_DATABASE_URL"]):
            ...

    Enqueues then write the task, its quota use, event and runs from this process, the way the
    server would (the servers' executors are woken by the commit and run them); reads, streams,
    cancels and progress reports go to the database too. The server must have migrated the
    database (``MigrationError`` otherwise: the app changes no schema) and the app must be synced,
    as for any enqueue; the hosts' clocks must agree. A database that cannot be reached raises
    ``EventSendError``, as an unreachable server does. ``ConfigurationError`` for a URL that is
    not PostgreSQL.
    """
    return direct.DirectRuntime(client, database_url, pool_size=pool_size)


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
    where = pg_tx.describe(conn.info.dsn)
    task_id: str | None = None
    if conn.autocommit or conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        # One statement, no savepoint: ``stepline_create_task`` writes nothing when it refuses
        # (quota, a taken id, functions changed since they were read), so the application's
        # transaction carries on either way; alone on an autocommit connection the call is its
        # own transaction.
        tx = pg_tx.PostgresTransaction(conn, pg_tx.shared_queries(), where)
        if where not in _SNAPSHOTS:
            await _reload(tx)

        def plan(previous: str | None) -> records.TaskPlan | None:
            fingerprint, functions = _SNAPSHOTS[where]  # read once: the two belong together
            ingestor = ingest.Ingestor(functions)
            return engine_tasks.plan_task(ingestor, request, now, task_id=previous, functions=fingerprint)

        enqueued, task_id = await engine_tasks.create_planned(request, plan, tx.create_task, lambda: _reload(tx))
        if enqueued is not None:
            return enqueued
    async with pg_tx.borrowed_transaction(conn) as tx:
        known = _SNAPSHOTS.get(where)
        if known is None or await tx.functions_fingerprint() != known[0]:
            await _reload(tx)
        ingestor = ingest.Ingestor(_SNAPSHOTS[where][1])
        if task_id is None:  # nothing planned yet (an idle connection, or flow control)
            return await engine_tasks.enqueue(tx, ingestor, request, now)
        return await engine_tasks.enqueue_stepwise(tx, ingestor, request, now, task_id=task_id)


_SNAPSHOTS: dict[str, tuple[records.FunctionsFingerprint, registry.Registry]] = {}
"""Per database (``host:port/dbname``): the synced functions as last read, with their
fingerprint, replaced together in one assignment (applications may enqueue from several threads
and loops). Plans carry the fingerprint, and ``stepline_create_task`` refuses a plan once the
table changed, so the functions are read again only then: an enqueue is one statement."""


async def _reload(tx: pg_tx.PostgresTransaction) -> None:
    _SNAPSHOTS[tx.where] = synced.snapshot(await pg_tx.functions_in(tx))
