"""Accepting events: store them, start the runs they trigger, resume the pauses they match.

All of it happens in the caller's transaction, so an accepted event and its runs exist
together or not at all. Lifecycle events emitted by ending runs come back through here too
(that is how ``on_failure`` handlers start and invoking parents resume).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stepline import errors
from stepline.engine import flow_control, flow_ingest, transitions
from stepline.engine import registry as registry_
from stepline.engine import tasks as tasks_
from stepline.protocol import expressions, jsonvalue
from stepline.storage import records, store

IDEMPOTENCY_WINDOW_MS = 24 * 3_600_000
MAX_LIFECYCLE_DEPTH = 8


class StaleFunctions(Exception):
    """Raised inside ``ingest(functions=...)``'s transaction when the functions table changed
    since the registry was loaded from it: the caller rolls back, reloads and ingests again.
    Control flow between ``ingest`` and its caller, never seen by users."""


@dataclasses.dataclass(slots=True)
class IngestResult:
    event_ids: list[str] = dataclasses.field(default_factory=list)
    """Public ids of the accepted events, in order."""
    internal_ids: list[str] = dataclasses.field(default_factory=list)
    """Stored ids (``EventRecord.internal_id``) of the accepted events, in order."""
    matched: int = 0
    """Runs the events called for, before idempotency dropped those already started."""
    task_run_id: str | None = None
    """With ``ingest(task_id=...)``: the run that drives the task."""
    run_ids: list[str] = dataclasses.field(default_factory=list)
    """Runs started, in order."""
    resumed_runs: list[str] = dataclasses.field(default_factory=list)


def normalise_event(raw: dict[str, Any], now: int) -> records.EventRecord:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise errors.ConfigurationError("an event needs a non-empty string 'name'")
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise errors.ConfigurationError(f"event {name!r}: 'data' must be a JSON object")
    jsonvalue.check_json(data, f"the data of event {name!r}")
    internal_id = transitions.new_id()
    ts = raw.get("ts")
    event_id = raw.get("id")
    return records.EventRecord(
        internal_id=internal_id,
        id=str(event_id) if event_id not in (None, "") else internal_id,
        name=name,
        data=data,
        ts=int(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else now,
        received_at=now,
        user=dict(raw.get("user") or {}),
        v=raw.get("v"),
    )


@dataclasses.dataclass(slots=True)
class _PlannedRun:
    fn: registry_.FunctionSpec
    event: dict[str, Any]
    event_internal_id: str
    run_id: str = dataclasses.field(default_factory=transitions.new_id)
    task_id: str | None = None

    def to_run(self, now: int) -> records.RunRecord:
        data = self.event.get("data") or {}
        correlation = (data.get("_inngest") or {}).get("correlation_id")
        invoked = self.event.get("name") == transitions.INVOKED_EVENT
        task_id = self.task_id
        if task_id is None and self.event.get("name") == transitions.FAILED_EVENT and data.get("task_id"):
            task_id = str(data["task_id"])  # an on_failure handler of a task's run: it ends the task
        return records.RunRecord(
            id=self.run_id,
            function_id=self.fn.id,
            event_id=self.event_internal_id,
            events=[self.event],
            status=records.RunStatus.QUEUED,
            created_at=now,
            correlation_id=str(correlation) if correlation and invoked else None,
            task_id=task_id,
        )


class Ingestor:
    def __init__(self, registry: registry_.Registry) -> None:
        self.registry = registry

    async def ingest(
        self,
        tx: store.Transaction,
        raw_events: list[dict[str, Any]],
        now: int,
        *,
        depth: int = 0,
        task_id: str | None = None,
        functions: records.FunctionsFingerprint | None = None,
    ) -> IngestResult:
        """Store ``raw_events`` and act on them: a batch costs a few statements, not a few per event.

        With ``task_id`` (one event, sent by ``tasks.enqueue``), the first run the event starts
        drives that task. With ``functions`` (the fingerprint of the synced functions the
        registry holds), ``StaleFunctions`` if the table no longer matches it: another server
        recorded a sync this one has not loaded yet, and the events would miss its functions.
        """
        events = [normalise_event(raw, now) for raw in raw_events]
        if functions is None:
            await tx.insert_events(events)
        elif not await tx.insert_events_checking(events, functions):
            raise StaleFunctions
        wires = [event.to_wire() for event in events]
        planned = [
            _PlannedRun(fn, wire, event.internal_id)
            for event, wire in zip(events, wires, strict=True)
            for fn in self._targets(wire)
        ]
        result = IngestResult(event_ids=[event.id for event in events], internal_ids=[e.internal_id for e in events])
        result.matched = len(planned)
        result.run_ids = await self._start_runs(tx, planned, now, task_id=task_id)
        if task_id is not None:
            result.task_run_id = next((plan.run_id for plan in planned if plan.task_id == task_id), None)
        await self._end_unhandled_task_failures(tx, wires, planned, result.run_ids, now)
        listeners: dict[str, list[records.PauseRecord]] = {}
        for wire in wires:
            result.resumed_runs.extend(await self._resume_pauses(tx, wire, now, depth, listeners))
        return result

    def plan_task_runs(
        self, raw_event: dict[str, Any], now: int
    ) -> tuple[records.EventRecord, list[records.PlannedRun]] | None:
        """A task's event and the runs it would start, decided before any statement runs, so
        the store can write the whole task at once (``Transaction.create_task``). None when a
        function it triggers has flow control, which decides per run inside the transaction:
        then ``ingest`` does the work."""
        event = normalise_event(raw_event, now)
        wire = event.to_wire()
        if wire["name"] in (transitions.INVOKED_EVENT, transitions.FAILED_EVENT, transitions.FINISHED_EVENT):
            return None  # lifecycle events, which ``ingest`` treats specially (tasks cannot send them)
        targets = self._targets(wire)
        if any(fn.flow.active or fn.limits.active for fn in targets):
            return None
        runs = []
        for fn in targets:
            run = _PlannedRun(fn, wire, event.internal_id).to_run(now)
            claim = records.IdempotencyClaim(fn.id, str(wire.get("id")), run.id, now + IDEMPOTENCY_WINDOW_MS)
            runs.append(records.PlannedRun(run, transitions.discover_item(run, now), claim))
        return event, runs

    def _targets(self, wire: dict[str, Any]) -> list[registry_.FunctionSpec]:
        if wire["name"] == transitions.INVOKED_EVENT:
            target = (wire["data"].get("_inngest") or {}).get("fn_id")
            fn = self.registry.get(str(target))
            return [fn] if fn is not None else []
        return self.registry.triggered_by(wire)

    async def start_run(
        self,
        tx: store.Transaction,
        fn: registry_.FunctionSpec,
        events: list[dict[str, Any]],
        event_internal_id: str,
        now: int,
    ) -> str | None:
        """Create a run and its first queue item; None if the event id already started this function."""
        started = await self._start_runs(tx, [_PlannedRun(fn, events[0], event_internal_id)], now)
        return started[0] if started else None

    async def rerun(
        self, tx: store.Transaction, fn: registry_.FunctionSpec, original: records.RunRecord, now: int
    ) -> str:
        """A new run of ``fn`` for ``original``'s events, bypassing the idempotency window.

        The rerun of a task's run drives the task again (see ``tasks.reopen_for_rerun``).
        """
        run = _PlannedRun(fn, original.events[0], original.event_id).to_run(now)
        run.events = original.events
        await tasks_.reopen_for_rerun(tx, original, run, now)
        await tx.insert_runs([run])
        item = transitions.discover_item(run, now)
        await flow_control.prepare(tx, [(fn, run, item)], now)
        await tx.enqueue_many([item])
        return run.id

    async def _start_runs(
        self, tx: store.Transaction, planned: list[_PlannedRun], now: int, *, task_id: str | None = None
    ) -> list[str]:
        """Create the runs whose event id is new to their function (the idempotency window).

        With ``task_id``, the first run actually started drives that task.
        """
        if not planned:
            return []
        claims = [
            records.IdempotencyClaim(plan.fn.id, str(plan.event.get("id")), plan.run_id, now + IDEMPOTENCY_WINDOW_MS)
            for plan in planned
        ]
        claimed = await tx.claim_idempotency_keys(claims, now)
        winners = [plan for plan, won in zip(planned, claimed, strict=True) if won]
        if task_id is not None and winners:
            winners[0].task_id = task_id
        started = [(plan.fn, plan.to_run(now)) for plan in winners]
        if any(fn.flow.active for fn, _ in started):  # rate limits, debounce, batches...
            return await flow_ingest.start_runs(tx, self, started, now)
        runs = [run for _, run in started]
        await tx.insert_runs(runs)
        items = [transitions.discover_item(run, now) for run in runs]
        await flow_control.prepare(tx, [(fn, run, item) for (fn, run), item in zip(started, items, strict=True)], now)
        await tx.enqueue_many(items)
        return [run.id for run in runs]

    async def _end_unhandled_task_failures(
        self,
        tx: store.Transaction,
        wires: list[dict[str, Any]],
        planned: list[_PlannedRun],
        started: list[str],
        now: int,
    ) -> None:
        """A task whose run failed waits for the function's ``on_failure`` handler; when the
        ``function.failed`` event started none, the task fails now."""
        for wire in wires:
            task_id = wire["data"].get("task_id") if wire["name"] == transitions.FAILED_EVENT else None
            if not task_id:
                continue
            handlers = [plan.run_id for plan in planned if plan.event is wire and plan.run_id in started]
            if not handlers:
                await tasks_.failure_unhandled(tx, str(task_id), now)

    async def _resume_pauses(
        self,
        tx: store.Transaction,
        wire: dict[str, Any],
        now: int,
        depth: int,
        listeners: dict[str, list[records.PauseRecord]],
    ) -> list[str]:
        resumed: list[str] = []
        if wire["name"] == transitions.FINISHED_EVENT:
            correlation = wire["data"].get("correlation_id")
            if correlation:
                pause = await tx.pause_by_correlation(str(correlation))
                if pause is not None:
                    data = wire["data"]
                    result = {"error": data["error"]} if "error" in data else {"data": data.get("result")}
                    if await self.resume(tx, pause, result, now, depth=depth):
                        resumed.append(pause.run_id)
            return resumed
        name = wire["name"]
        if name not in listeners:  # one lookup per event name per batch
            listeners[name] = await tx.pauses_for_event(name)
        for pause in listeners[name]:
            if pause.kind is records.PauseKind.CANCEL:
                await flow_ingest.cancel_if_matches(tx, self, pause, wire, now, depth)
                continue
            if pause.kind is not records.PauseKind.WAIT or pause.created_at > now:
                continue
            variables = {"event": pause.event or {}, "async": wire}
            if pause.expression and not expressions.matches(pause.expression, variables):
                continue
            if await self.resume(tx, pause, wire, now, depth=depth):
                resumed.append(pause.run_id)
        return resumed

    async def resume(
        self, tx: store.Transaction, pause: records.PauseRecord, result: Any, now: int, *, depth: int = 0
    ) -> bool:
        """Resume a paused run with ``result`` as the step's memo; False if someone else did."""
        if not await tx.delete_pause(pause.id):
            return False
        await tx.delete_item(pause.timeout_item_id)
        run = await tx.lock_run(pause.run_id)
        if run is None or run.status.is_terminal:
            return False
        kind = "wait" if pause.kind is records.PauseKind.WAIT else "invoke"
        await transitions.record_step(
            tx,
            run,
            step_id=pause.step_id,
            name=pause.step_name or pause.step_id,
            kind=kind,
            result=result,
            attempts=1,
            started_at=pause.created_at,
            now=now,
        )
        await transitions.continue_if_ready(tx, run, now)
        await tx.update_run(run)
        return True

    async def ingest_lifecycle(
        self, tx: store.Transaction, lifecycle: list[dict[str, Any]], now: int, depth: int = 0
    ) -> None:
        """Ingest events emitted by a run's end (guarding against runaway chains)."""
        if lifecycle and depth < MAX_LIFECYCLE_DEPTH:
            await self.ingest(tx, lifecycle, now, depth=depth + 1)
            return
        for wire in lifecycle:  # dropped: a task waiting for its failure handler must still end
            if wire["name"] == transitions.FAILED_EVENT and wire["data"].get("task_id"):
                await tasks_.failure_unhandled(tx, str(wire["data"]["task_id"]), now)
