"""Shared fixtures: every storage-touching test runs on SQLite and on PostgreSQL.

PostgreSQL tests use ``STEPLINE_TEST_POSTGRES_URL`` (default the local server's ``postgres``
database). Each test gets a fresh database cloned from a migrated template. Without a
reachable server they skip with the reason; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from stepline.engine import retention
from stepline.storage import open_store, store

POSTGRES_ADMIN_URL = os.environ.get("STEPLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgres"]


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def _postgres_unavailable_reason() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {exc}".strip()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated template database; per-test databases are cloned from it."""
    reason = _postgres_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    name = f"stepline_tpl_{os.getpid()}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(POSTGRES_ADMIN_URL, name)

    import asyncio

    async def migrate() -> None:
        opened = await open_store(url)
        await opened.close()

    asyncio.run(migrate())
    yield name
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_postgres_database(template: str) -> str:
    name = f"stepline_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


def drop_postgres_database(name: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL for each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/stepline.db"
        return
    template: str = request.getfixturevalue("postgres_template")
    name = make_postgres_database(template)
    try:
        yield _with_database(POSTGRES_ADMIN_URL, name)
    finally:
        drop_postgres_database(name)


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL database, for the PostgreSQL-only features and tests."""
    name = make_postgres_database(postgres_template)
    try:
        yield _with_database(POSTGRES_ADMIN_URL, name)
    finally:
        drop_postgres_database(name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[store.Store]:
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def second_store(database_url: str) -> AsyncIterator[store.Store]:
    """Another store on the ``db`` fixture's database, as a second server process would have."""
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(autouse=True)
def _no_early_retention_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Background retention passes wait an hour in tests (5 s in production). Many tests seed rows
    at fixed past times (``tests.server.support.NOW_MS``, June 2025) and start servers on them: a
    pass 5 s after start would delete those rows under the test. Retention tests call
    ``purge_history`` or ``Retention.purge`` themselves, or set the delays back."""
    monkeypatch.setattr(retention, "FIRST_PASS_S", 3600.0)
