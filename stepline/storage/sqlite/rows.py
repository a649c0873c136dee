"""Records to SQLite parameters and rows back to records.

JSON columns hold compact ``json.dumps`` text (``NULL`` for an absent optional value),
booleans are 0/1 and enums their string values. Rows come from the column lists of
``queries.sql``, in that order.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from stepline import errors
from stepline.storage import records

Row = tuple[Any, ...]
Params = dict[str, Any]


def encode(value: records.JSON) -> str:
    """Compact JSON text of ``value``."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise errors.SerializationError(f"cannot store a value that is not JSON-serialisable: {exc}") from exc


def encode_optional(value: records.JSON) -> str | None:
    """JSON text of ``value``, or ``None`` (SQL ``NULL``) when ``value`` is ``None``."""
    return None if value is None else encode(value)


def decode_optional(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# events


def event_params(event: records.EventRecord) -> Params:
    return {
        "internal_id": event.internal_id,
        "id": event.id,
        "name": event.name,
        "data": encode(event.data),
        "user_data": encode(event.user),
        "v": event.v,
        "ts": event.ts,
        "received_at": event.received_at,
    }


def event_record(row: Row) -> records.EventRecord:
    internal_id, id_, name, data, user_data, v, ts, received_at = row
    return records.EventRecord(
        internal_id=internal_id,
        id=id_,
        name=name,
        data=json.loads(data),
        ts=ts,
        received_at=received_at,
        user=json.loads(user_data),
        v=v,
    )


# runs


def run_params(run: records.RunRecord) -> Params:
    return {
        "id": run.id,
        "function_id": run.function_id,
        "event_id": run.event_id,
        "events": encode(run.events),
        "status": run.status.value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "output": encode_optional(run.output),
        "error": encode_optional(run.error),
        "pending": encode(run.pending),
        "disable_immediate": int(run.disable_immediate),
        "request_version": run.request_version,
        "step_count": run.step_count,
        "correlation_id": run.correlation_id,
        "task_id": run.task_id,
    }


def run_record(row: Row) -> records.RunRecord:
    (
        id_,
        function_id,
        event_id,
        events,
        status,
        created_at,
        started_at,
        ended_at,
        output,
        error,
        pending,
        disable_immediate,
        request_version,
        step_count,
        correlation_id,
        task_id,
    ) = row
    return records.RunRecord(
        id=id_,
        function_id=function_id,
        event_id=event_id,
        events=json.loads(events),
        status=records.RunStatus(status),
        created_at=created_at,
        started_at=started_at,
        ended_at=ended_at,
        output=decode_optional(output),
        error=decode_optional(error),
        pending=json.loads(pending),
        disable_immediate=bool(disable_immediate),
        request_version=request_version,
        step_count=step_count,
        correlation_id=correlation_id,
        task_id=task_id,
    )


# steps


def step_params(step: records.StepRecord) -> Params:
    return {
        "run_id": step.run_id,
        "step_id": step.step_id,
        "name": step.name,
        "kind": step.kind,
        "result": encode(step.result),
        "seq": step.seq,
        "attempts": step.attempts,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
    }


def step_record(row: Row) -> records.StepRecord:
    run_id, step_id, name, kind, result, seq, attempts, started_at, ended_at = row
    return records.StepRecord(
        run_id=run_id,
        step_id=step_id,
        name=name,
        kind=kind,
        result=json.loads(result),
        seq=seq,
        attempts=attempts,
        started_at=started_at,
        ended_at=ended_at,
    )


# queue


def item_params(item: records.QueueItem) -> Params:
    return {
        "id": item.id,
        "run_id": item.run_id,
        "kind": item.kind.value,
        "step_id": item.step_id,
        "attempt": item.attempt,
        "available_at": item.available_at,
        "claims": item.claims,
        "payload": encode(item.payload),
        "created_at": item.created_at,
    }


def item_record(row: Row) -> records.QueueItem:
    id_, run_id, kind, step_id, attempt, available_at, claims, payload, created_at = row
    return records.QueueItem(
        id=id_,
        run_id=run_id,
        kind=records.ItemKind(kind),
        available_at=available_at,
        attempt=attempt,
        step_id=step_id,
        payload=json.loads(payload),
        claims=claims,
        created_at=created_at,
    )


# pauses


def pause_params(pause: records.PauseRecord) -> Params:
    return {
        "id": pause.id,
        "run_id": pause.run_id,
        "step_id": pause.step_id,
        "kind": pause.kind.value,
        "event_name": pause.event_name,
        "expression": pause.expression,
        "event": encode_optional(pause.event),
        "correlation_id": pause.correlation_id,
        "expires_at": pause.expires_at,
        "created_at": pause.created_at,
        "timeout_item_id": pause.timeout_item_id,
        "step_name": pause.step_name,
    }


def pause_record(row: Row) -> records.PauseRecord:
    (
        id_,
        run_id,
        step_id,
        kind,
        event_name,
        expression,
        event,
        correlation_id,
        expires_at,
        created_at,
        timeout_item_id,
        step_name,
    ) = row
    return records.PauseRecord(
        id=id_,
        run_id=run_id,
        step_id=step_id,
        kind=records.PauseKind(kind),
        expires_at=expires_at,
        created_at=created_at,
        timeout_item_id=timeout_item_id,
        event_name=event_name,
        expression=expression,
        event=decode_optional(event),
        correlation_id=correlation_id,
        step_name=step_name,
    )


# functions and cron


def function_params(function: records.FunctionRecord) -> Params:
    return {
        "id": function.id,
        "app_id": function.app_id,
        "name": function.name,
        "config": encode(function.config),
        "updated_at": function.updated_at,
    }


def cron_params(cron: records.CronRecord) -> Params:
    return {"function_id": cron.function_id, "schedule": cron.schedule, "next_fire_at": cron.next_fire_at}


def cron_record(row: Row) -> records.CronRecord:
    function_id, schedule, next_fire_at = row
    return records.CronRecord(function_id=function_id, schedule=schedule, next_fire_at=next_fire_at)


def app_params(app: records.AppRecord) -> Params:
    return dataclasses.asdict(app)


def app_record(row: Row) -> records.AppRecord:
    id_, url, framework, sdk, checksum, synced_at, error = row
    return records.AppRecord(id_, url, synced_at, framework, sdk, checksum, error)


def function_record(row: Row) -> records.FunctionRecord:
    id_, app_id, name, config, updated_at, version = row
    return records.FunctionRecord(id_, app_id, name, json.loads(config), updated_at, version)


# tasks


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
        "result": encode_optional(task.result),
        "error": encode_optional(task.error),
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "pending_deadline": task.pending_deadline,
        "pending_timeout_ms": task.pending_timeout_ms,
        "quota_feature": task.quota_feature,
        "refund_on_failure": int(task.refund_on_failure),
        "version": task.version,
    }


def task_record(row: Row) -> records.TaskRecord:
    (
        id_,
        kind,
        owner,
        status,
        event_id,
        run_id,
        progress,
        message,
        result,
        error,
        created_at,
        updated_at,
        started_at,
        ended_at,
        pending_deadline,
        pending_timeout_ms,
        quota_feature,
        refund_on_failure,
        version,
    ) = row
    return records.TaskRecord(
        id=id_,
        kind=kind,
        owner=owner,
        status=records.TaskStatus(status),
        event_id=event_id,
        run_id=run_id,
        progress=progress,
        message=message,
        result=decode_optional(result),
        error=decode_optional(error),
        created_at=created_at,
        updated_at=updated_at,
        started_at=started_at,
        ended_at=ended_at,
        pending_deadline=pending_deadline,
        pending_timeout_ms=pending_timeout_ms,
        quota_feature=quota_feature,
        refund_on_failure=bool(refund_on_failure),
        version=version,
    )


def run_concurrency_params(keys: records.RunConcurrency) -> Params:
    return {
        "run_id": keys.run_id,
        "first_key": keys.key1,
        "first_limit": keys.limit1,
        "second_key": keys.key2,
        "second_limit": keys.limit2,
    }
