"""Records to query parameters and result rows back to records, for PostgreSQL.

JSON columns are JSONB: values go in wrapped in ``Jsonb`` and come back decoded by psycopg.
A nullable JSON column stores SQL ``NULL`` for ``None``; a NOT NULL one stores JSON ``null``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from stepline import errors
from stepline.storage import records

Row = dict[str, Any]
Params = dict[str, Any]


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise errors.SerializationError(
            f"cannot store a value in PostgreSQL: it is not JSON-serialisable ({exc}); "
            "use only dicts, lists, strings, finite numbers, booleans and None"
        ) from exc


def _json(value: Any) -> Jsonb:
    """A JSONB parameter (encoded when the query runs)."""
    return Jsonb(value, dumps=_dumps)


def events_param(events: Sequence[dict[str, Any]]) -> Jsonb:
    """A run's ``events`` column value."""
    return _json(list(events))


def _nullable_json(value: Any) -> Jsonb | None:
    return None if value is None else _json(value)


def event_params(event: records.EventRecord) -> Params:
    return {
        "internal_id": event.internal_id,
        "id": event.id,
        "name": event.name,
        "data": _json(event.data),
        "user_data": _json(event.user),
        "v": event.v,
        "ts": event.ts,
        "received_at": event.received_at,
    }


def event_record(row: Row) -> records.EventRecord:
    return records.EventRecord(
        internal_id=row["internal_id"],
        id=row["id"],
        name=row["name"],
        data=row["data"],
        ts=row["ts"],
        received_at=row["received_at"],
        user=row["user_data"],
        v=row["v"],
    )


def run_params(run: records.RunRecord) -> Params:
    return {
        "id": run.id,
        "function_id": run.function_id,
        "event_id": run.event_id,
        "events": _json(run.events),
        "status": run.status.value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "output": _nullable_json(run.output),
        "error": _nullable_json(run.error),
        "pending": _json(run.pending),
        "disable_immediate": run.disable_immediate,
        "request_version": run.request_version,
        "step_count": run.step_count,
        "correlation_id": run.correlation_id,
        "task_id": run.task_id,
    }


def run_record(row: Row) -> records.RunRecord:
    return records.RunRecord(
        id=row["id"],
        function_id=row["function_id"],
        event_id=row["event_id"],
        events=row["events"],
        status=records.RunStatus(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        output=row["output"],
        error=row["error"],
        pending=row["pending"],
        disable_immediate=row["disable_immediate"],
        request_version=row["request_version"],
        step_count=row["step_count"],
        correlation_id=row["correlation_id"],
        task_id=row["task_id"],
    )


def step_params(step: records.StepRecord) -> Params:
    return {
        "run_id": step.run_id,
        "step_id": step.step_id,
        "name": step.name,
        "kind": step.kind,
        "result": _json(step.result),
        "seq": step.seq,
        "attempts": step.attempts,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
    }


def step_record(row: Row) -> records.StepRecord:
    return records.StepRecord(
        run_id=row["run_id"],
        step_id=row["step_id"],
        name=row["name"],
        kind=row["kind"],
        result=row["result"],
        seq=row["seq"],
        attempts=row["attempts"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
    )


def item_params(item: records.QueueItem) -> Params:
    return {
        "id": item.id,
        "run_id": item.run_id,
        "kind": item.kind.value,
        "step_id": item.step_id,
        "attempt": item.attempt,
        "available_at": item.available_at,
        "claims": item.claims,
        "payload": _json(item.payload),
        "created_at": item.created_at,
    }


def item_record(row: Row) -> records.QueueItem:
    return records.QueueItem(
        id=row["id"],
        run_id=row["run_id"],
        kind=records.ItemKind(row["kind"]),
        available_at=row["available_at"],
        attempt=row["attempt"],
        step_id=row["step_id"],
        payload=row["payload"],
        claims=row["claims"],
        created_at=row["created_at"],
    )


def pause_params(pause: records.PauseRecord) -> Params:
    return {
        "id": pause.id,
        "run_id": pause.run_id,
        "step_id": pause.step_id,
        "kind": pause.kind.value,
        "event_name": pause.event_name,
        "expression": pause.expression,
        "event": _nullable_json(pause.event),
        "correlation_id": pause.correlation_id,
        "expires_at": pause.expires_at,
        "created_at": pause.created_at,
        "timeout_item_id": pause.timeout_item_id,
        "step_name": pause.step_name,
    }


def pause_record(row: Row) -> records.PauseRecord:
    return records.PauseRecord(
        id=row["id"],
        run_id=row["run_id"],
        step_id=row["step_id"],
        kind=records.PauseKind(row["kind"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        timeout_item_id=row["timeout_item_id"],
        event_name=row["event_name"],
        expression=row["expression"],
        event=row["event"],
        correlation_id=row["correlation_id"],
        step_name=row["step_name"],
    )


def function_params(function: records.FunctionRecord) -> Params:
    return {
        "id": function.id,
        "app_id": function.app_id,
        "name": function.name,
        "config": _json(function.config),
        "updated_at": function.updated_at,
    }


def cron_params(cron: records.CronRecord) -> Params:
    return {"function_id": cron.function_id, "schedule": cron.schedule, "next_fire_at": cron.next_fire_at}


def functions_fingerprint(row: Row) -> records.FunctionsFingerprint:
    """A row of the ``functions_fingerprint`` query."""
    return records.FunctionsFingerprint(int(row["functions"]), int(row["latest"]), int(row["versions"]))


def cron_record(row: Row) -> records.CronRecord:
    return records.CronRecord(
        function_id=row["function_id"], schedule=row["schedule"], next_fire_at=row["next_fire_at"]
    )


def app_params(app: records.AppRecord) -> Params:
    return dataclasses.asdict(app)


def app_record(row: Row) -> records.AppRecord:
    return records.AppRecord(
        id=row["id"],
        url=row["url"],
        synced_at=row["synced_at"],
        framework=row["framework"],
        sdk=row["sdk"],
        checksum=row["checksum"],
        error=row["error"],
    )


def function_record(row: Row) -> records.FunctionRecord:
    return records.FunctionRecord(
        row["id"], row["app_id"], row["name"], row["config"], row["updated_at"], row["version"]
    )


def task_params(task: records.TaskRecord) -> Params:
    return {
        "id": task.id,
        "kind": task.kind,
        "owner": task.owner,
        "status": task.status.value,
        "event_id": task.event_id,
        "run_id": task.run_id,
        "progress": task.progress,
        "message": task.message,
        "result": _nullable_json(task.result),
        "error": _nullable_json(task.error),
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "pending_deadline": task.pending_deadline,
        "pending_timeout_ms": task.pending_timeout_ms,
        "quota_feature": task.quota_feature,
        "refund_on_failure": task.refund_on_failure,
        "version": task.version,
    }


def task_record(row: Row) -> records.TaskRecord:
    return records.TaskRecord(
        id=row["id"],
        kind=row["kind"],
        owner=row["owner"],
        status=records.TaskStatus(row["status"]),
        event_id=row["event_id"],
        run_id=row["run_id"],
        progress=row["progress"],
        message=row["message"],
        result=row["result"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        pending_deadline=row["pending_deadline"],
        pending_timeout_ms=row["pending_timeout_ms"],
        quota_feature=row["quota_feature"],
        refund_on_failure=row["refund_on_failure"],
        version=row["version"],
    )


def run_concurrency_params(keys: records.RunConcurrency) -> Params:
    return {
        "run_id": keys.run_id,
        "first_key": keys.key1,
        "first_limit": keys.limit1,
        "second_key": keys.key2,
        "second_limit": keys.limit2,
    }


def _document(params: Params) -> dict[str, Any]:
    """Query parameters as a JSON object for a server-side function (``Jsonb`` unwrapped)."""
    return {key: value.obj if isinstance(value, Jsonb) else value for key, value in params.items()}


def task_plan_document(plan: records.TaskPlan) -> Jsonb:
    """The ``plan`` argument of ``stepline_create_task`` (migration 0009)."""
    quota = plan.quota
    return _json(
        {
            "serialise": plan.serialise,
            "now": plan.now,
            "functions": None if plan.functions is None else dataclasses.asdict(plan.functions),
            "task": _document(task_params(plan.task)),
            "quota": None
            if quota is None
            else {"feature": quota.feature, "owner": quota.owner, "limit": quota.limit, "window_ms": quota.window_ms},
            "event": _document(event_params(plan.event)),
            "runs": [
                {
                    "run": _document(run_params(planned.run)),
                    "item": _document(item_params(planned.item)),
                    "key": planned.claim.key,
                    "expires_at": planned.claim.expires_at,
                }
                for planned in plan.runs
            ],
        }
    )
