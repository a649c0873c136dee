"""The PostgreSQL store's pool hands out the most recently returned connection first, so that the
request path stays on the warmest backend process (see stepline/storage/postgres/pool.py)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import psycopg_pool

from stepline.storage.postgres import pool as pg_pool


async def backend_pid(conn: Any) -> int:
    cursor = await conn.execute("SELECT pg_backend_pid()")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


def test_psycopg_pool_still_has_the_names_the_pool_relies_on() -> None:
    # Both are private to psycopg_pool; a release that renames them must fail here, not quietly
    # bring back the oldest-first order.
    assert callable(psycopg_pool.AsyncConnectionPool._get_ready_connection)
    unopened = psycopg_pool.AsyncConnectionPool("", open=False)
    assert isinstance(unopened._pool, collections.deque)


async def test_the_connection_returned_last_is_handed_out_first(postgres_url: str) -> None:
    async with pg_pool.RecentFirstPool(
        postgres_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.wait()
        # Three connections at once, so that the pool holds three idle ones afterwards.
        held = [await pool.getconn() for _ in range(3)]
        pids = [await backend_pid(conn) for conn in held]
        assert len(set(pids)) == 3
        for conn in held:  # returned oldest first: the last one back is pids[2]
            await pool.putconn(conn)

        for _ in range(5):  # one caller after another: always the same, warmest connection
            async with pool.connection() as conn:
                assert await backend_pid(conn) == pids[2]

        # Two callers at once get the two most recent; the one idle longest stays last in line.
        async with pool.connection() as first, pool.connection() as second:
            assert {await backend_pid(first), await backend_pid(second)} == {pids[2], pids[1]}
        idle = [await backend_pid(conn) for conn in list(pool._pool)]
        assert idle[0] == pids[0], "the connection idle longest must stay where shrinking closes it"


async def test_concurrent_callers_all_get_a_connection(postgres_url: str) -> None:
    async with pg_pool.RecentFirstPool(postgres_url, min_size=1, max_size=3, kwargs={"autocommit": True}) as pool:

        async def one_call(n: int) -> int:
            async with pool.connection() as conn:
                cursor: Any = await conn.execute("SELECT %s::int, pg_sleep(0.01)", (n,))
                row = await cursor.fetchone()
                assert row is not None
                return int(row[0])

        assert sorted(await asyncio.gather(*(one_call(n) for n in range(20)))) == list(range(20))
