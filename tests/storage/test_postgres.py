"""PostgreSQL-specific behaviour: SKIP LOCKED claiming across stores, LISTEN/NOTIFY wake-ups,
migrations under concurrency, schema parity with SQLite, and connection errors."""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from stepline import errors
from stepline.storage import migrate, open_store, queries, records, store
from stepline.storage.postgres import transaction as pg_tx
from tests import conftest

postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

_ids = itertools.count(1)


def make_item(available_at: int, run_id: str = "run-x") -> records.QueueItem:
    return records.QueueItem(
        id=f"item{next(_ids):08d}",
        run_id=run_id,
        kind=records.ItemKind.DISCOVER,
        available_at=available_at,
        created_at=1,
    )


async def enqueue(db: store.Store, *items: records.QueueItem) -> None:
    async with db.transaction() as tx:
        for item in items:
            await tx.enqueue(item)


@pytest.fixture
def empty_postgres_url(postgres_template: str) -> Iterator[str]:
    """A new database with no Stepline schema at all."""
    name = f"stepline_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conftest.POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conftest._with_database(conftest.POSTGRES_ADMIN_URL, name)
    finally:
        conftest.drop_postgres_database(name)


async def admin_query(database_url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement on its own connection; its rows, if it returns any."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(sql.SQL(query), params)
        return await cursor.fetchall() if cursor.description else []


def database_name(database_url: str) -> str:
    return database_url.rpartition("/")[2]


# (a) claiming


async def _claim_until_empty(db: store.Store, batch: int) -> list[records.QueueItem]:
    got: list[records.QueueItem] = []
    while claimed := await db.claim(now=10_000, limit=batch, lease_until=10**12):
        got.extend(claimed)
    return got


@postgres_only
async def test_two_stores_claiming_concurrently_never_share_an_item(db: store.Store, second_store: store.Store) -> None:
    items = [make_item(n) for n in range(500)]
    await enqueue(db, *items)

    results = await asyncio.gather(
        *(_claim_until_empty(s, batch) for s in (db, second_store) for batch in (3, 5, 7, 11))
    )

    ids = [item.id for batch in results for item in batch]
    assert len(ids) == len(set(ids)) == 500
    assert set(ids) == {item.id for item in items}
    assert all(item.claims == 1 for batch in results for item in batch)
    # Both stores took part.
    from_db = sum(len(r) for r in results[:4])
    assert 0 < from_db < 500
    assert await db.claim(now=10_000, limit=10, lease_until=10**12) == []


@postgres_only
async def test_claim_plans_stay_on_indexes_at_scale(db: store.Store, database_url: str) -> None:
    await admin_query(
        database_url,
        "INSERT INTO queue (id, run_id, kind, available_at, created_at) "
        "SELECT lpad(g::text, 12, '0'), 'run-x', 'discover', g, 0 FROM generate_series(1, 50000) AS g",
    )
    await admin_query(database_url, "ANALYZE queue")
    claim = queries.load_queries("postgres")["claim_items"]
    positional = claim.replace("%(now)s", "$1").replace("%(limit)s", "$2").replace("%(lease_until)s", "$3")

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        plans = []
        for now in (100, 25_000, 60_000):  # custom plans, as for the first executions
            cursor = await conn.execute("EXPLAIN " + claim, {"now": now, "limit": 10, "lease_until": 10**9})
            plans.append("\n".join(str(row[0]) for row in await cursor.fetchall()))
        # The generic plan PostgreSQL may switch to once psycopg prepares the statement.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(sql.SQL("PREPARE generic_claim (bigint, bigint, bigint) AS ") + sql.SQL(positional))
        cursor = await conn.execute("EXPLAIN EXECUTE generic_claim (25000, 10, 1000000000)")
        plans.append("\n".join(str(row[0]) for row in await cursor.fetchall()))

    for plan in plans:
        assert "Index Scan using queue_ready on queue" in plan, plan
        assert "Index Scan using queue_pkey on queue" in plan, plan
        assert "Seq Scan" not in plan, plan


# (b) wake-ups across stores


async def _elapsed(db: store.Store, seconds: float) -> float:
    started = time.monotonic()
    await db.wait_for_work(seconds)
    return time.monotonic() - started


def _function(app_id: str, name: str, updated_at: int) -> records.FunctionRecord:
    return records.FunctionRecord(f"{app_id}-{name}", app_id, name, {"triggers": []}, updated_at)


async def _summary_and_table(database_url: str) -> tuple[tuple[object, ...], tuple[object, ...]]:
    summary = await admin_query(database_url, "SELECT functions, latest, versions FROM functions_summary")
    table = await admin_query(
        database_url,
        "SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(version), 0) FROM functions",
    )
    return summary[0], table[0]


@postgres_only
async def test_a_sync_committing_behind_another_counts_its_functions(database_url: str, db: store.Store) -> None:
    """Two transactions changing functions commit one behind the other: the second waits for
    the first's summary (migration 0013) and counts the first's functions in its own."""
    first = await psycopg.AsyncConnection.connect(database_url)
    second = await psycopg.AsyncConnection.connect(database_url)
    try:
        await first.execute(
            "INSERT INTO functions (id, app_id, name, config, updated_at) VALUES ('a-1', 'a', '1', '{}', 500)"
        )
        await first.execute("SET CONSTRAINTS ALL IMMEDIATE")  # its summary now, holding the row till commit
        await second.execute(
            "INSERT INTO functions (id, app_id, name, config, updated_at) VALUES ('b-1', 'b', '1', '{}', 400)"
        )
        committing = asyncio.ensure_future(second.commit())
        await asyncio.sleep(0.3)
        assert not committing.done()  # waits for the first to commit
        await first.commit()
        await asyncio.wait_for(committing, 10)
    finally:
        await first.close()
        await second.close()
    summary, table = await _summary_and_table(database_url)
    assert summary == table == (2, 500, 2)


@postgres_only
async def test_concurrent_syncs_through_two_stores_keep_the_summary_exact(
    database_url: str, db: store.Store, second_store: store.Store
) -> None:
    async def sync(on: store.Store, app_id: str, rounds: int) -> None:
        for n in range(rounds):
            async with on.transaction() as tx:
                for name in ("x", "y", "z"):
                    await tx.upsert_function(_function(app_id, name, 1_000 + n))
                kept = ["x", "y"] if n % 2 else ["x", "y", "z"]
                await tx.delete_functions_except(app_id, [f"{app_id}-{name}" for name in kept])

    await asyncio.gather(*(sync(on, f"app{i}", 15) for i, on in enumerate([db, second_store, db, second_store])))

    summary, table = await _summary_and_table(database_url)
    assert summary == table
    async with db.transaction() as tx:
        assert await tx.functions_fingerprint() == records.FunctionsFingerprint.of(await db.list_functions())


@postgres_only
async def test_enqueue_in_one_store_wakes_another_through_notify(db: store.Store, second_store: store.Store) -> None:
    await second_store.wait_for_work(0)
    waiter = asyncio.create_task(_elapsed(second_store, 10.0))
    await asyncio.sleep(0.1)
    assert not waiter.done()

    await enqueue(db, make_item(100))

    assert await asyncio.wait_for(waiter, 5.0) < 2.0


@postgres_only
async def test_a_store_is_woken_once_by_its_own_enqueue_and_not_again_by_its_notify(
    db: store.Store, second_store: store.Store
) -> None:
    """The commit wakes the store that made it; the NOTIFY it sent wakes the other stores only,
    so the first store's executor does not claim again for nothing when it comes back."""
    await enqueue(db, make_item(99))  # every pooled connection used so far is known
    await db.wait_for_work(0)
    await asyncio.sleep(0.3)  # that enqueue's own NOTIFY has come back by now
    await db.wait_for_work(0)
    await second_store.wait_for_work(0)

    await enqueue(db, make_item(100))

    assert await _elapsed(db, 5.0) < 0.1  # woken at commit
    assert await _elapsed(second_store, 5.0) < 2.0  # by the NOTIFY
    assert await _elapsed(db, 0.5) >= 0.45  # and nothing more


async def _enqueue_then_fail(db: store.Store) -> None:
    async with db.transaction() as tx:
        await tx.enqueue(make_item(100))
        raise RuntimeError("abort")


@postgres_only
async def test_a_rolled_back_enqueue_notifies_no_one(db: store.Store, second_store: store.Store) -> None:
    await second_store.wait_for_work(0)
    with pytest.raises(RuntimeError):
        await _enqueue_then_fail(db)

    assert 0.25 <= await _elapsed(second_store, 0.3) < 2.0
    assert await db.count_queue() == 0


async def _listeners(database_url: str) -> set[int]:
    """Backends of ``database_url`` that finished their ``LISTEN``."""
    rows = await admin_query(
        conftest.POSTGRES_ADMIN_URL,
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'stepline-listener' "
        "AND query = 'LISTEN stepline_work' AND state = 'idle'",
        database_name(database_url),
    )
    return {int(str(row[0])) for row in rows}


@postgres_only
async def test_listener_reconnects_after_its_connection_is_killed(
    db: store.Store, second_store: store.Store, database_url: str
) -> None:
    before = await _listeners(database_url)
    assert len(before) == 2
    await admin_query(
        conftest.POSTGRES_ADMIN_URL,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)",
        list(before),
    )

    deadline = time.monotonic() + 15
    while (after := await _listeners(database_url)) & before or len(after) < 2:
        assert time.monotonic() < deadline, f"listeners did not come back: {after}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    await second_store.wait_for_work(0)  # the reconnection itself signals work
    waiter = asyncio.create_task(_elapsed(second_store, 10.0))
    await asyncio.sleep(0.1)

    await enqueue(db, make_item(100))

    assert await asyncio.wait_for(waiter, 5.0) < 2.0


@postgres_only
async def test_close_releases_every_connection(database_url: str) -> None:
    opened = await open_store(database_url, pool_size=4)
    await opened.count_queue()
    await opened.close()
    await opened.close()  # idempotent

    deadline = time.monotonic() + 10
    while rows := await admin_query(
        conftest.POSTGRES_ADMIN_URL,
        "SELECT pid FROM pg_stat_activity WHERE datname = %s",
        database_name(database_url),
    ):
        assert time.monotonic() < deadline, f"connections left open: {rows}"
        await asyncio.sleep(0.05)


# (c) migrations


async def test_concurrent_opens_migrate_once(empty_postgres_url: str) -> None:
    stores = await asyncio.gather(*(open_store(empty_postgres_url, pool_size=2) for _ in range(4)))
    try:
        rows = await admin_query(empty_postgres_url, "SELECT version, name FROM schema_migrations ORDER BY version")
        assert rows == [(m.version, m.name) for m in migrate.load_migrations("postgres")]
        item = make_item(100)
        await enqueue(stores[0], item)
        assert [claimed.id for claimed in await stores[3].claim(now=100, limit=5, lease_until=1_000)] == [item.id]
        for opened in stores:
            assert await opened.count_queue() == 1
    finally:
        for opened in stores:
            await opened.close()

    reopened = await open_store(empty_postgres_url)
    await reopened.close()
    assert len(await admin_query(empty_postgres_url, "SELECT version FROM schema_migrations")) == len(
        migrate.load_migrations("postgres")
    )


async def test_a_failing_migration_raises_and_rolls_back(empty_postgres_url: str) -> None:
    await admin_query(empty_postgres_url, "CREATE TABLE events (unrelated INTEGER)")

    with pytest.raises(errors.MigrationError, match=r"0001_initial\.sql failed .*already exists"):
        await open_store(empty_postgres_url)

    assert await admin_query(empty_postgres_url, "SELECT version FROM schema_migrations") == []
    assert await admin_query(empty_postgres_url, "SELECT to_regclass('public.queue')") == [(None,)]


async def test_a_database_newer_than_the_code_is_refused(empty_postgres_url: str) -> None:
    opened = await open_store(empty_postgres_url)
    await opened.close()
    await admin_query(empty_postgres_url, "INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 0)")

    with pytest.raises(errors.MigrationError, match="schema version 999"):
        await open_store(empty_postgres_url)


# (d) schema parity


def _sqlite_schema(tmp_path: Path) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Tables with their columns, and indexes with their definitions, of the SQLite migrations."""
    conn = sqlite3.connect(tmp_path / "schema.db")
    try:
        for migration in migrate.load_migrations("sqlite"):
            conn.executescript(migration.sql)
        tables = {
            name: {str(col[1]) for col in conn.execute(f'PRAGMA table_info("{name}")')}
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(name).startswith("sqlite_")
        }
        indexes = {
            str(name): str(definition)
            for name, definition in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    finally:
        conn.close()
    return tables, indexes


async def _postgres_schema(database_url: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Tables with their column types, and indexes with their definitions, primary keys aside."""
    tables: dict[str, dict[str, str]] = {}
    for table, column, data_type in await admin_query(
        database_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'",
    ):
        tables.setdefault(str(table), {})[str(column)] = str(data_type)
    index_rows = await admin_query(
        database_url,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%%_pkey'",
    )
    return tables, {str(name): str(definition) for name, definition in index_rows}


JSON_COLUMNS = {
    ("events", "data"),
    ("events", "user_data"),
    ("runs", "events"),
    ("runs", "output"),
    ("runs", "error"),
    ("runs", "pending"),
    ("steps", "result"),
    ("queue", "payload"),
    ("pauses", "event"),
    ("functions", "config"),
    ("tasks", "result"),
    ("tasks", "error"),
    ("task_changes", "task"),
}


@postgres_only
async def test_migrated_schema_matches_sqlite(database_url: str, tmp_path: Path) -> None:
    sqlite_tables, sqlite_indexes = _sqlite_schema(tmp_path)
    pg_tables, pg_indexes = await _postgres_schema(database_url)

    assert pg_tables.pop("schema_migrations") == {
        "version": "integer",
        "name": "text",
        "applied_at": "bigint",
    }
    sqlite_tables.pop("schema_migrations", None)
    assert {name: set(columns) for name, columns in pg_tables.items()} == sqlite_tables
    assert set(pg_indexes) == set(sqlite_indexes)
    for name, definition in sqlite_indexes.items():
        assert (" WHERE " in definition) == (" WHERE " in pg_indexes[name]), name
        assert definition.startswith("CREATE UNIQUE") == pg_indexes[name].startswith("CREATE UNIQUE"), name
    assert "(available_at, id)" in pg_indexes["queue_ready"]

    json_columns = {(t, c) for t, columns in pg_tables.items() for c, kind in columns.items() if kind == "jsonb"}
    assert json_columns == JSON_COLUMNS
    assert pg_tables["runs"]["disable_immediate"] == "boolean"
    for table, column in [("queue", "available_at"), ("runs", "created_at"), ("crons", "next_fire_at")]:
        assert pg_tables[table][column] == "bigint"
    options = await admin_query(database_url, "SELECT reloptions FROM pg_class WHERE relname = 'queue'")
    assert "fillfactor=80" in (options[0][0] or [])  # type: ignore[operator]


# (e) query names


def _sqlite_queries_exist() -> bool:
    return resources.files("stepline.storage.sqlite").joinpath("queries.sql").is_file()


PARAMETER_DIFFERENCES = {
    "extend_lease": ({"id", "claims", "lease_until"}, {"ids", "claims", "lease_until"}),
    "lock_quota": (set(), {"feature", "owner"}),
    "lock_task_id": (set(), {"id"}),
}
"""SQLite extends one lease per statement; PostgreSQL extends a batch through arrays. SQLite's
single writer already serialises quota checks; PostgreSQL takes a lock per feature and owner."""


def test_both_backends_define_the_same_queries_with_the_same_parameters() -> None:
    if not _sqlite_queries_exist():
        pytest.skip("stepline/storage/sqlite/queries.sql does not exist yet: nothing to compare")
    sqlite_queries = queries.load_queries("sqlite")
    postgres_queries = queries.load_queries("postgres")

    assert set(sqlite_queries) == set(postgres_queries)
    for name, sqlite_text in sqlite_queries.items():
        sqlite_params = set(re.findall(r"(?<![:\w]):([a-z_]+)", sqlite_text))
        postgres_params = set(re.findall(r"%\(([a-z_]+)\)s", postgres_queries[name]))
        assert (sqlite_params, postgres_params) == PARAMETER_DIFFERENCES.get(
            name, (postgres_params, postgres_params)
        ), name


# (f) connection errors


async def test_an_unreachable_server_raises_storage_error_without_the_password() -> None:
    with pytest.raises(errors.StorageError) as caught:
        await open_store("postgresql://stepline:s3cret-pw@127.0.0.1:1/stepline_db")

    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1/stepline_db: ")
    assert "s3cret-pw" not in message
    assert "s3cret-pw" not in repr(caught.value.__cause__)


async def test_a_malformed_url_raises_storage_error_without_the_password() -> None:
    with pytest.raises(errors.StorageError) as caught:
        await open_store("postgresql://stepline:s3cret-pw@127.0.0.1/db?nosuchoption=1")

    assert "invalid PostgreSQL URL 'postgresql://stepline:***@127.0.0.1/db?nosuchoption=1'" in str(caught.value)
    assert "nosuchoption" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:s3cret@pw@db/x", "postgresql://u:***@db/x"),
        ("postgresql://u@db/x?password=s3cret-pw&sslmode=off", "postgresql://u@db/x?password=***&sslmode=off"),
        ("postgresql://u:p@db/x", "postgresql://u:***@db/x"),
    ],
    ids=["at-sign-in-password", "password-parameter", "one-letter-password"],
)
def test_messages_quoting_a_url_mask_its_password_and_nothing_else(url: str, masked: str) -> None:
    message = f"connection to {url} failed: port 5432 refused the password"

    assert pg_tx.scrub(message, url) == f"connection to {masked} failed: port 5432 refused the password"


# driver errors


@postgres_only
async def test_database_errors_become_storage_errors(db: store.Store) -> None:
    item = make_item(100)
    await enqueue(db, item)

    with pytest.raises(errors.StorageError, match="enqueue_item failed: duplicate key"):
        await enqueue(db, item)
    assert await db.count_queue() == 1


async def _enqueue_past_a_failed_statement(db: store.Store, taken: records.QueueItem) -> None:
    async with db.transaction() as tx:
        await tx.enqueue(make_item(200))
        with pytest.raises(errors.StorageError, match="duplicate key"):
            await tx.enqueue(taken)  # caught here, but PostgreSQL aborted the transaction


@postgres_only
async def test_a_transaction_whose_statement_failed_commits_nothing(db: store.Store) -> None:
    taken = make_item(100)
    await enqueue(db, taken)

    with pytest.raises(errors.StorageError, match="a statement in it failed"):
        await _enqueue_past_a_failed_statement(db, taken)

    assert await db.count_queue() == 1
    await enqueue(db, make_item(300))  # the connection went back to the pool usable
    assert await db.count_queue() == 2


@postgres_only
async def test_unserialisable_json_raises_serialization_error(db: store.Store) -> None:
    item = records.QueueItem(
        id="bad", run_id="run-x", kind=records.ItemKind.STEP, available_at=1, payload={"x": float("nan")}
    )
    with pytest.raises(errors.SerializationError, match="not JSON-serialisable"):
        await enqueue(db, item)
    assert await db.count_queue() == 0


# connections cut under the pool (a database restart, a failover, an idle timeout)


async def _cut_pooled_connections(database_url: str) -> int:
    """End every pooled backend of the store's database, as a restart of PostgreSQL would;
    how many there were."""
    ended = await admin_query(
        conftest.POSTGRES_ADMIN_URL,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = 'stepline'",
        database_name(database_url),
    )
    return len(ended)


async def _use_several_connections(db: store.Store) -> None:
    """Statements in flight at once, so that the pool holds several connections, each used just now."""
    async with asyncio.TaskGroup() as group:
        for _ in range(4):
            group.create_task(db.count_queue())
            group.create_task(enqueue(db, make_item(100)))


@postgres_only
async def test_reads_and_writes_after_the_connections_were_cut_meet_no_error(
    db: store.Store, database_url: str
) -> None:
    await _use_several_connections(db)
    assert await _cut_pooled_connections(database_url) >= 2

    # Each call would otherwise be handed a dead connection used a moment ago, whose check is
    # skipped, and fail; the first read finds its connection cut and goes again on a live one,
    # and the transactions that follow are not handed the other dead ones.
    assert await db.count_queue() == 4
    await enqueue(db, make_item(200))
    await enqueue(db, make_item(300))
    assert len(await db.claim(now=1_000, limit=10, lease_until=60_000)) == 6


@postgres_only
async def test_a_transaction_begun_on_a_cut_connection_goes_on_another(db: store.Store, database_url: str) -> None:
    await _use_several_connections(db)
    assert await _cut_pooled_connections(database_url) >= 2

    await enqueue(db, make_item(200))  # the first statement on the pool since the cut

    assert await db.count_queue() == 5
