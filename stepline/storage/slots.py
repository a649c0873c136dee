"""Concurrency slots at claim time, shared by both backends: which claimed items may run.

A claim leases the oldest ready items whatever their function. Items under a concurrency
limit (``ckey1`` set, and a call: ``discover`` or ``step``) come back *tentative*. Holding the
keys' locks (PostgreSQL: transaction-scoped advisory locks; SQLite: its one writer), the store
counts the slots each key has in use and sorts the tentative items, oldest first, into:

* **admit**: every key has room: the item now holds a slot and is returned to the executor;
* **park**: a key is at capacity: the item leaves the ready range (``available_at`` moves to
  ``PARKED_AT``, its ready time is kept in ``parked_at``) and waits on that key (``parked_on``),
  so no claim reads it again until
* a slot of the key frees (the holder completes, reschedules or deletes its item): the same
  transaction, under the key's lock, unparks the oldest item(s) parked on the key.
* **return**: room, but the claimer asked for fewer items: back to ready, untouched.

A busy key's backlog therefore sits outside ``queue_ready``: claims for other keys and other
functions never scan it, and each parked item is read once when parked and once when unparked.
A dead worker's slot frees when its lease expires (slots are counted only while
``available_at``, the lease expiry, is in the future); its item is then claimed again and
takes the slot itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stepline.storage import records

PARKED_AT = 4_000_000_000_000_000
"""``available_at`` of a parked item: far beyond any real time (about year 128,000)."""
PARKING_BUDGET_S = 0.05
"""How long one claim may go on parking a busy key's backlog once it has work to return: the
rest is parked by the next claims, and the executor is not kept from starting what it has."""
CALL_KINDS = frozenset({records.ItemKind.DISCOVER, records.ItemKind.STEP})
"""Items that call the function, hence need a slot. Timers (wake, pause timeout) do not."""


@dataclasses.dataclass(slots=True)
class Claimed:
    """A claimed row: the item, and what flow control needs to know about it."""

    item: records.QueueItem
    ready_at: int
    """``available_at`` before the claim leased it: where it parks or returns to."""
    limits: tuple[tuple[str, int], ...] = ()
    """``(key, limit)`` of each concurrency key; empty for items without limits."""

    @property
    def tentative(self) -> bool:
        return bool(self.limits) and self.item.kind in CALL_KINDS


def claimed(item: records.QueueItem, row: Mapping[str, Any]) -> Claimed:
    """``Claimed`` from a claim row with ``ckey1, climit1, ckey2, climit2, ready_at``."""
    limits: list[tuple[str, int]] = []
    for key_column, limit_column in (("ckey1", "climit1"), ("ckey2", "climit2")):
        key, limit = row[key_column], row[limit_column]
        if key is not None and limit is not None:
            limits.append((str(key), int(limit)))
    ready_at = row["ready_at"]
    return Claimed(item, item.available_at if ready_at is None else int(ready_at), tuple(limits))


@dataclasses.dataclass(slots=True)
class Decision:
    admit: list[Claimed] = dataclasses.field(default_factory=list)
    park: list[Claimed] = dataclasses.field(default_factory=list)
    blocked_on: list[str] = dataclasses.field(default_factory=list)
    """For each parked item, the key at capacity it waits on (parallel to ``park``)."""
    give_back: list[Claimed] = dataclasses.field(default_factory=list)
    top_up: dict[str, int] = dataclasses.field(default_factory=dict)
    """Keys with room left that a parked item also needed: unpark this many of their own
    waiting items (see ``decide``)."""


def enough(items: Sequence[records.QueueItem], started: float) -> bool:
    """Whether a claim that is parking a backlog should return now (it has work, and has
    parked for ``PARKING_BUDGET_S``). A claim with nothing yet goes on: an empty answer must
    mean that nothing is ready, or burst mode (``run_until_idle``) would stop early."""
    return bool(items) and time.monotonic() - started >= PARKING_BUDGET_S


def keys_of(found: Iterable[Claimed]) -> list[str]:
    """The distinct keys of tentative items, sorted (locks are always taken in one order)."""
    return sorted({key for claim in found if claim.tentative for key, _ in claim.limits})


def decide(claimed: Sequence[Claimed], used: Mapping[str, int], room: int) -> Decision:
    """Sort claimed items (in claim order) given each key's slots in ``used`` and the number of
    items the claimer still wants (``room``).

    An item whose key is full parks on that key. If its other key has room, that room may be
    owed to items parked there: the item was perhaps unparked by a release of that key, and
    now parks elsewhere. ``top_up`` passes such room on, so a freed slot is never lost to an
    item that cannot use it (each pass moves an item to another key's list, so it ends)."""
    counts = dict(used)
    decision = Decision()
    for claim in claimed:
        full = (
            next((key for key, limit in claim.limits if counts.get(key, 0) >= limit), None) if claim.tentative else None
        )
        if full is not None:
            decision.park.append(claim)
            decision.blocked_on.append(full)
        elif len(decision.admit) >= room:
            decision.give_back.append(claim)
        else:
            decision.admit.append(claim)
            if claim.tentative:
                for key, _ in claim.limits:
                    counts[key] = counts.get(key, 0) + 1
    for claim, blocking in zip(decision.park, decision.blocked_on, strict=True):
        for key, limit in claim.limits:
            if key != blocking and counts.get(key, 0) < limit:
                decision.top_up[key] = max(decision.top_up.get(key, 0), limit - counts.get(key, 0))
    return decision


def released(rows: Iterable[Mapping[str, Any] | Sequence[Any]], *, slot_known: bool = True) -> dict[str, int]:
    """Slots freed per key by deleted or rescheduled rows ``(ckey1, ckey2[, slot])``.

    Rows of a reschedule carry no ``slot`` (``slot_known=False``): an item with keys is then
    assumed to have held one. At worst that unparks an item needlessly; it parks again at its
    claim, so the guess costs work, never correctness."""
    freed: dict[str, int] = {}
    for row in rows:
        values = list(row.values()) if isinstance(row, Mapping) else list(row)
        key1, key2 = values[0], values[1]
        held = bool(values[2]) if slot_known else True
        if not held:
            continue
        for key in (key1, key2):
            if key is not None:
                freed[str(key)] = freed.get(str(key), 0) + 1
    return freed
