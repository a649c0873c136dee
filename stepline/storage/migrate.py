"""Forward-only numbered migrations, shared by both backends.

Each backend keeps ``migrations/NNNN_name.sql``. Applied versions are recorded in
``schema_migrations``; a migration file runs once, in number order, in its own transaction.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

from stepline import errors

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """The migrations of ``backend`` (``sqlite`` or ``postgres``) in version order."""
    folder = resources.files(f"stepline.storage.{backend}").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise errors.MigrationError(f"{backend} migrations must be numbered 0001, 0002, ... without gaps")
    return found


def require_current(applied: set[int], known: list[Migration], where: str) -> None:
    """For a process that uses a database without migrating it (``open_store(migrate=False)``):
    ``MigrationError`` unless the schema is exactly the one this Stepline knows."""
    missing = [migration.name for migration in known if migration.version not in applied]
    if missing:
        raise errors.MigrationError(
            f"the database at {where} lacks migrations {', '.join(missing)}: start a Stepline server on it, "
            "or run 'stepline migrate', before this process uses it"
        )
    newest = max(applied, default=0)
    if newest > len(known):
        raise errors.MigrationError(
            f"the database at {where} has schema version {newest}, newer than this Stepline knows "
            f"({len(known)}): upgrade Stepline here too"
        )
