"""Choosing and opening a backend from a database URL."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stepline import errors
from stepline.storage import store


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseURL:
    backend: str
    """``sqlite`` or ``postgres``."""
    target: str
    """A file path for SQLite; the libpq connection string for PostgreSQL."""


def parse_database_url(url: str) -> DatabaseURL:
    """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``postgresql://...``."""
    if url.startswith("sqlite://"):
        rest = url.removeprefix("sqlite://")
        if not rest.startswith("/") or rest == "/":
            raise errors.ConfigurationError(
                f"invalid SQLite URL {url!r}: use sqlite:///relative/file.db or sqlite:////absolute/file.db"
            )
        path = rest[1:]
        _check_sqlite_path(url, path)
        return DatabaseURL("sqlite", path)
    if url.startswith(("postgresql://", "postgres://")):
        return DatabaseURL("postgres", url)
    raise errors.ConfigurationError(
        f"unsupported database URL {url!r}: expected sqlite:///path/to/file.db or postgresql://user@host/db"
    )


def _check_sqlite_path(url: str, path: str) -> None:
    # Everything after sqlite:/// is the file name: a query string or a trailing slash would
    # silently create a file called 'x.db?mode=ro', or a file where a folder was meant.
    example = "sqlite:///relative/file.db or sqlite:////absolute/file.db"
    if "?" in path:
        query = path.partition("?")[2]
        raise errors.ConfigurationError(
            f"invalid SQLite URL {url!r}: Stepline takes no options after '?' ({query!r}); "
            f"name just the file, such as {example}"
        )
    if path.endswith("/") or Path(path).is_dir():
        raise errors.ConfigurationError(
            f"invalid SQLite URL {url!r}: {path} names a folder; name the database file in it, "
            f"such as sqlite:///{path.rstrip('/')}/stepline.db"
        )


async def open_store(url: str, *, pool_size: int = 10, migrate: bool = True, listen: bool = True) -> store.Store:
    """Open (creating if needed) the database at ``url`` and bring its schema up to date.

    ``pool_size`` bounds PostgreSQL connections; SQLite uses one connection. ``listen=False``
    spares PostgreSQL's ``LISTEN`` connection in a process that executes nothing (its
    ``wait_for_work`` then only times out).
    """
    parsed = parse_database_url(url)
    if parsed.backend == "sqlite":
        from stepline.storage.sqlite import store as sqlite_store

        path = Path(parsed.target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.StorageError(f"cannot create the folder of the SQLite database {path}: {exc}") from None
        return await sqlite_store.SQLiteStore.open(path, migrate=migrate)
    from stepline.storage.postgres import store as postgres_store

    return await postgres_store.PostgresStore.open(parsed.target, pool_size=pool_size, migrate=migrate, listen=listen)
