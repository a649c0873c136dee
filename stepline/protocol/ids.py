"""Ids as the store keeps them.

Task ids are ULIDs, which the spec makes case-insensitive; the store keeps the canonical
upper-case form. A client that chose ``01j9...`` for its task and polls with it must find the
task its enqueue made, so every lookup by id goes through ``canonical``.
"""

from __future__ import annotations

import ulid


def canonical(task_id: str) -> str:
    """``task_id`` in upper case if it is a ULID, else unchanged (it then names no task)."""
    if len(task_id) != 26:
        return task_id
    try:
        return str(ulid.ULID.from_str(task_id))
    except ValueError:
        return task_id
