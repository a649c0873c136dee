"""Following a task's changes, for streams: every change in order, until it ended.

Each change of a task row is logged in ``task_changes`` (a trigger, in the changing
transaction), so a stream reading every ``poll_s`` sends each change, even several that land
between two reads, and any server's changes, with no process memory involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from stepline.storage import records, store

POLL_S = 0.2
"""How often a stream reads the change log (one index range read)."""
RECHECK_S = 5.0
"""A stream that found nothing new for this long reads the task row too: the log keeps changes
for minutes (``sweeper.CHANGES_KEPT_MS``), and a stream stalled for longer must still see the end."""


async def follow(
    db: store.Store, task: records.TaskRecord, poll_s: float = POLL_S
) -> AsyncIterator[records.TaskRecord | None]:
    """Yield the task after each change newer than ``task``, oldest first, and stop after a
    terminal one; yield None after a read that found nothing (callers send keep-alives and
    notice disconnected clients then)."""
    version, ended = task.version, task.status.is_terminal
    quiet_s = 0.0
    while not ended:
        await asyncio.sleep(poll_s)
        changes = await db.task_changes(task.id, version)
        if not changes:
            quiet_s += poll_s
            if quiet_s < RECHECK_S:
                yield None
                continue
            quiet_s = 0.0
            current = await db.get_task(task.id)
            if current is None or current.version <= version:
                yield None
                continue
            changes = [current]
        quiet_s = 0.0
        for change in changes:
            version, ended = change.version, change.status.is_terminal
            yield change
            if ended:
                return


async def opening(db: store.Store, current: records.TaskRecord, seen: int | None) -> list[records.TaskRecord]:
    """The frames a stream starts with, before ``follow``: the task now for a new stream. A stream
    resumed after version ``seen`` (the ``Last-Event-ID`` of a reconnecting client) starts with
    every change since, when the log still holds them all (else with the task now, which is what
    each change's frame holds anyway), and with nothing when the client has the current version."""
    if seen is None or seen > current.version:  # an id of no version of this task: start afresh
        return [current]
    if seen == current.version:
        return []
    changes = await db.task_changes(current.id, seen)
    if changes and changes[0].version == seen + 1:  # versions go up by one per change
        return changes
    return [current]


async def stream(
    db: store.Store, current: records.TaskRecord, seen: int | None = None, poll_s: float = POLL_S
) -> AsyncIterator[records.TaskRecord | None]:
    """``opening``, then ``follow`` from its last frame: what a task stream sends (None: a read
    found nothing new). Sends nothing to a client that resumed after the task's terminal version."""
    first = await opening(db, current, seen)
    for sent in first:
        yield sent
    last = first[-1] if first else current
    if last.status.is_terminal:
        return
    async for change in follow(db, last, poll_s):
        yield change
