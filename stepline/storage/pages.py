"""Which named query serves a page of the read API, and with what parameters.

Both backends define the same list queries (each reads one index), so the choice is made
here once.
"""

from __future__ import annotations

from typing import Any

from stepline.storage import records

Params = dict[str, Any]


def run_page(
    function_id: str | None,
    status: records.RunStatus | None,
    event_id: str | None,
    id_range: records.IdRange,
    limit: int,
) -> tuple[str, Params]:
    """The query serving this filter combination (each reads one index), and its parameters."""
    params: Params = {
        "function_id": function_id,
        "status": None if status is None else status.value,
        "event_id": event_id,
        "lower": id_range.lower,
        "upper": id_range.upper,
        "limit": limit,
    }
    if event_id is not None:
        return "list_runs_by_event", params
    if function_id is not None and status is not None:
        return "list_runs_by_function_status", params
    if function_id is not None:
        return "list_runs_by_function", params
    if status is not None:
        return "list_runs_by_status", params
    return "list_runs", params


def event_page(name: str | None, cursor: str | None, limit: int) -> tuple[str, Params]:
    params: Params = {"name": name, "upper": records.IdRange.page(cursor).upper, "limit": limit}
    return ("list_events" if name is None else "list_events_by_name"), params


def task_page(
    owner: str | None, status: records.TaskStatus | None, cursor: str | None, limit: int, kind: str | None = None
) -> tuple[str, Params]:
    """The query serving this filter combination of ``list_tasks`` (each reads one index; with an
    owner, a ``kind`` is one more condition on the owner's few rows)."""
    params: Params = {
        "owner": owner,
        "status": None if status is None else status.value,
        "kind": kind,
        "upper": records.IdRange.page(cursor).upper,
        "limit": limit,
    }
    if owner is None and kind is not None:
        return ("list_tasks_by_kind" if status is None else "list_tasks_by_kind_status"), params
    if owner is not None and status is not None:
        return "list_tasks_by_owner_status", params
    if owner is not None:
        return "list_tasks_by_owner", params
    if status is not None:
        return "list_tasks_by_status", params
    return "list_tasks", params
