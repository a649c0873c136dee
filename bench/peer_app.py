"""RoleReady's enqueue route on a peer's queue, for ``bench/enqueue_peers.py``.

::

    BENCH_PEER=procrastinate|dbos|celery|floor BENCH_PEER_URL=... ROLEREADY_DATABASE=... \\
        uvicorn bench.peer_app:app

The same route as ``examples/roleready``: bearer auth and the ownership check against the same
SQLite tables (the example's own modules), the same pydantic body, ``202 {"aiJobId"}``, but the
work is handed to a peer instead of ``client.tasks.enqueue``:

* **procrastinate**: ``defer_async`` of a task, one row in ``procrastinate_jobs`` (PostgreSQL);
  the worker runs in this process;
* **DBOS**: ``Queue.enqueue_async`` of a three-step workflow, a row in ``workflow_status`` (its
  system database on PostgreSQL); DBOS runs the queue in this process;
* **Celery**: ``apply_async`` of a task to a Redis broker (in memory: no write reaches a disk
  before the answer, unlike the others); the worker is its own process (``celery worker``);
* **floor**: no queue at all: one row INSERTed into a table of its own (PostgreSQL, autocommit,
  so a durable commit) from a connection pool. Nothing runs the row. It is the least any
  route that durably accepts work in PostgreSQL can cost on this machine, with this framework.

Each peer does less than ``client.tasks.enqueue``: no task row of its own with a status clients
read, no quota counted in the same transaction. The figures compare the cost of handing the work
over from a route, nothing more. ``BENCH_PEER_URL`` is the PostgreSQL URL (procrastinate, DBOS, floor)
or the Redis URL (Celery).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import fastapi
import fastapi.responses
from pydantic import BaseModel, ConfigDict, Field

from examples.roleready import auth, db, jobs

PEER = os.environ.get("BENCH_PEER", "")
URL = os.environ.get("BENCH_PEER_URL", "")

Enqueue = Callable[[str, str], Awaitable[str]]
"""(owner, job id) -> the id a client would poll."""


def _procrastinate() -> tuple[Enqueue, Callable[[], AbstractAsyncContextManager[None]]]:
    import asyncio
    import contextlib

    import procrastinate

    queue = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=URL))

    @queue.task(name="tailor")
    async def tailor(job_id: str, owner: str) -> dict[str, str]:
        return {"job_id": job_id, "owner": owner, "resume": "tailored"}

    async def enqueue(owner: str, job_id: str) -> str:
        return str(await tailor.defer_async(job_id=job_id, owner=owner))

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with queue.open_async():
            await queue.schema_manager.apply_schema_async()
            worker = asyncio.create_task(queue.run_worker_async(install_signal_handlers=False))
            yield
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    return enqueue, running


def _dbos() -> tuple[Enqueue, Callable[[], AbstractAsyncContextManager[None]]]:
    from dbos import DBOS, Queue

    DBOS(config={"name": "bench-peer", "system_database_url": URL})
    queues: list[Queue] = []

    @DBOS.step()
    async def step(name: str, job_id: str) -> str:
        return f"{name}:{job_id}"

    @DBOS.workflow()
    async def tailor(job_id: str, owner: str) -> list[str]:
        return [await step(name, job_id) for name in ("job-intel", "model", "persist")]

    async def enqueue(owner: str, job_id: str) -> str:
        return (await queues[0].enqueue_async(tailor, job_id, owner)).workflow_id

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        DBOS.launch()
        # DBOS polls its queues (every second by default): every 10 ms, so that runs start about
        # as soon as Stepline's do.
        queues.append(await DBOS.register_queue_async("tailor", polling_interval_sec=0.01))
        yield
        DBOS.destroy()

    return enqueue, running


def _celery() -> tuple[Enqueue, Callable[[], AbstractAsyncContextManager[None]]]:
    from bench import peer_celery

    async def enqueue(owner: str, job_id: str) -> str:
        return str(peer_celery.tailor.apply_async((job_id, owner)).id)

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        yield

    return enqueue, running


def _floor() -> tuple[Enqueue, Callable[[], AbstractAsyncContextManager[None]]]:
    import uuid

    import psycopg_pool

    pool = psycopg_pool.AsyncConnectionPool(URL, kwargs={"autocommit": True}, min_size=2, max_size=4, open=False)

    async def enqueue(owner: str, job_id: str) -> str:
        job = str(uuid.uuid4())
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO bench_floor_jobs (id, owner, job_id) VALUES (%s, %s, %s)", (job, owner, job_id)
            )
        return job

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_floor_jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
                " job_id TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        yield
        await pool.close()

    return enqueue, running


PEERS = {"procrastinate": _procrastinate, "dbos": _dbos, "celery": _celery, "floor": _floor}
if PEER not in PEERS:
    raise SystemExit(f"BENCH_PEER must be one of {', '.join(PEERS)} (got {PEER!r})")
enqueue, running = PEERS[PEER]()


@asynccontextmanager
async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
    db.setup()
    async with running():
        yield


app = fastapi.FastAPI(title=f"RoleReady on {PEER} (bench)", lifespan=lifespan)
CurrentUser = Annotated[auth.User, fastapi.Depends(auth.auth)]


class TailorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


@app.post("/api/resumes/tailor", status_code=202)
async def tailor_route(body: TailorBody, user: CurrentUser) -> Any:
    if jobs.owned_job(user.id, body.job_id) is None:
        return fastapi.responses.JSONResponse({"error": f"no job {body.job_id!r}", "status": 404}, 404)
    return {"aiJobId": await enqueue(user.id, body.job_id)}


@app.get("/")
async def index() -> dict[str, str]:
    return {"peer": PEER}
