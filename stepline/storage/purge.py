"""How retention deletes each kind of finished history, and flow-control state equivalent to no
row, for both backends (``Store.purge_*``).

One batch is one transaction. A plan with a ``select`` query first names the doomed rows of its
main table (at most ``limit``; locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so servers
purging at once take disjoint batches), then deletes by those ids, dependants first and the main
table last. A plan without one deletes a batch in a single statement, which selects its rows
the same way. The queries are in each backend's ``queries.sql``, under the same names.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from stepline.storage import records


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    table: str
    """The main table: the batch is full when ``limit`` of its rows went."""
    select: str | None
    """The query naming a batch of doomed ids of ``table`` (returns rows with ``id``), or None."""
    deletes: tuple[tuple[str, str], ...]
    """``(table, query)`` pairs, run in order with the ids (``ids``), ``table``'s query last;
    without ``select``, one pair whose query deletes a batch itself."""


RUNS = Plan(
    "runs",
    "expired_runs",
    (
        ("steps", "delete_runs_steps"),
        ("queue", "delete_runs_items"),
        ("pauses", "delete_runs_pauses"),
        ("runs", "delete_runs"),  # run_concurrency follows by ON DELETE CASCADE
    ),
)
TASKS = Plan("tasks", "expired_tasks", (("task_changes", "delete_tasks_changes"), ("tasks", "delete_tasks")))
EVENTS = Plan("events", "expired_events", (("events", "delete_events"),))
IDEMPOTENCY_KEYS = Plan("idempotency_keys", None, (("idempotency_keys", "purge_idempotency_keys"),))
QUOTA_USES = Plan("quota_uses", None, (("quota_uses", "purge_quota_uses"),))
FLOW_KEYS = Plan("flow_keys", None, (("flow_keys", "purge_flow_keys"),))
THROTTLE_KEYS = Plan("throttle_keys", None, (("throttle_keys", "purge_throttle_keys"),))


def purged(plan: Plan, rows: dict[str, int], limit: int) -> records.Purged:
    """The rows a batch deleted per table (tables with none left out), full when ``limit`` of
    the main table's went."""
    return records.Purged({table: count for table, count in rows.items() if count}, rows.get(plan.table, 0) >= limit)


class PurgeVerbs(abc.ABC):
    """``Store.purge_*`` for both backends: each verb is one batch of its plan, which the backend
    runs in one transaction of its own (``_purge``)."""

    @abc.abstractmethod
    async def _purge(self, plan: Plan, params: dict[str, Any], limit: int) -> records.Purged:
        """One batch of ``plan`` with ``params``, in one transaction."""

    async def purge_runs(self, before: int, limit: int) -> records.Purged:
        return await self._purge(RUNS, {"before": before, "limit": limit}, limit)

    async def purge_tasks(self, before: int, limit: int) -> records.Purged:
        return await self._purge(TASKS, {"before": before, "limit": limit}, limit)

    async def purge_events(self, before: int, limit: int) -> records.Purged:
        params = {"before": before, "before_id": records.IdRange.floor(before), "limit": limit}
        return await self._purge(EVENTS, params, limit)

    async def purge_idempotency_keys(self, now: int, limit: int) -> records.Purged:
        return await self._purge(IDEMPOTENCY_KEYS, {"now": now, "limit": limit}, limit)

    async def purge_quota_uses(self, now: int, before: int, limit: int) -> records.Purged:
        return await self._purge(QUOTA_USES, {"now": now, "before": before, "limit": limit}, limit)

    async def purge_flow_keys(self, now: int, limit: int) -> records.Purged:
        return await self._purge(FLOW_KEYS, {"now": now, "limit": limit}, limit)

    async def purge_throttle_keys(self, now: int, limit: int) -> records.Purged:
        return await self._purge(THROTTLE_KEYS, {"now": now, "limit": limit}, limit)
