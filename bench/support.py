"""What the benchmarks share: scratch PostgreSQL databases and the machine's load."""

from __future__ import annotations

import os

import psycopg


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def postgres_unavailable_reason(admin_url: str) -> str | None:
    try:
        with psycopg.connect(admin_url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {admin_url} is unreachable: {exc}".strip()


def create_database(admin_url: str, name: str) -> str:
    """A new, empty database (replacing one left over by an interrupted run); returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"
