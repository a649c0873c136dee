"""Functions that apps synced into the database, as a ``Registry``: what a server (or a process
that only enqueues, ``engine.direct``) triggers and plans runs for.

Reloading compares each function's id and update time with what was loaded last, and rebuilds
the registry only when they changed, so callers may reload often.
"""

from __future__ import annotations

import asyncio
import logging

from stepline import errors
from stepline.engine import registry as registry_
from stepline.storage import records, store

logger = logging.getLogger("stepline.engine")


class SyncedFunctions:
    """Keeps ``registry`` equal to the ``functions`` table of a store (``reload``)."""

    def __init__(self, registry: registry_.Registry) -> None:
        self.registry = registry
        self.fingerprint: records.FunctionsFingerprint | None = None
        """Of the functions last loaded (None before the first ``reload``): what task plans made
        from the registry carry, so that the store refuses them once the table has changed."""
        self._signature: tuple[tuple[str, int], ...] = ()
        self._reloading = asyncio.Lock()
        """Reloads start from several places at once (the periodic refresh, a claim or an invoke
        of an unknown function, a stale plan): one at a time, so that a read made before a sync
        never replaces the registry after a read made since."""

    async def reload(self, db: store.Store) -> bool:
        """Rebuild the registry from the database if it changed; True when it did."""
        async with self._reloading:
            return self.load(await db.list_functions())

    def load(self, found: list[records.FunctionRecord]) -> bool:
        """Rebuild the registry from ``found`` (every synced function) if it changed; True when it did."""
        fingerprint = records.FunctionsFingerprint.of(found)
        signature = tuple((record.id, record.updated_at) for record in found)
        changed = signature != self._signature
        if changed:
            self.registry.replace(specs_of(found))
            self._signature = signature
        # Only now, after the registry: a plan that reads the new fingerprint plans from the new
        # functions (one that reads the old fingerprint with new functions is merely refused).
        self.fingerprint = fingerprint
        return changed


def snapshot(found: list[records.FunctionRecord]) -> tuple[records.FunctionsFingerprint, registry_.Registry]:
    """The fingerprint of ``found`` and a registry of their own, to be swapped together (one
    assignment) where threads share them."""
    return records.FunctionsFingerprint.of(found), registry_.Registry(specs_of(found))


def specs_of(found: list[records.FunctionRecord]) -> list[registry_.FunctionSpec]:
    specs: list[registry_.FunctionSpec] = []
    for record in found:
        try:
            specs.append(registry_.FunctionSpec.from_config(record.config, record.app_id))
        except errors.ConfigurationError as exc:
            logger.error("function %s is stored with an unusable configuration: %s", record.id, exc)
    return specs
