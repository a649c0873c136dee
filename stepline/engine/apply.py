"""Applying what a call (or a timer) produced to the run, in one transaction per change.

Each public method takes a leased queue item and either completes it, reschedules it (a
retry, or reused as the run's next discovery call) or raises ``LeaseLostError`` when the
lease passed to another worker, in which case nothing was written.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from stepline import errors
from stepline.engine import backoff, flow_timers, observe, transitions
from stepline.engine import clock as clock_
from stepline.engine import ingest as ingest_
from stepline.engine import registry as registry_
from stepline.protocol import durations, expressions, models, opcodes, responses
from stepline.storage import records, store

logger = logging.getLogger("stepline.engine")

MAX_SLEEP_MS = 366 * 86_400_000
DEFAULT_PAUSE_MS = 365 * 86_400_000
TRANSPORT_ERRORS = frozenset({"AppUnreachable", "TransportError"})
"""Errors of the way to the app, not of the function: see ``Applier._wait_for_app``."""
APP_DOWN_GRACE_MS = 3_600_000
APP_DOWN_MAX_DELAY_MS = 60_000
INVOKE_TIMEOUT_ERROR = {
    "name": "InngestInvokeTimeoutError",
    "message": "Timed out waiting for invoked function to complete",
}


_STEP_KINDS = {
    opcodes.Opcode.WAIT_FOR_EVENT: "wait",
    opcodes.Opcode.INVOKE_FUNCTION: "invoke",
    opcodes.Opcode.SLEEP: "sleep",
}


@dataclasses.dataclass(slots=True)
class Applied:
    ended: bool = False
    """The run reached a terminal state."""


def _sleep_until_ms(op: models.Op, now: int) -> int:
    text = str((op.opts or {}).get("duration") or op.name or "")
    try:
        target = now + durations.parse_duration_ms(text, at_most_ms=MAX_SLEEP_MS)
    except errors.ConfigurationError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            target = now
        else:
            target = int(parsed.timestamp() * 1000)
    return min(max(target, now), now + MAX_SLEEP_MS)


def _timeout_ms(value: object, now: int) -> int:
    if isinstance(value, str) and value:
        try:
            return now + durations.parse_duration_ms(value, at_most_ms=DEFAULT_PAUSE_MS)
        except errors.ConfigurationError:
            pass
    return now + DEFAULT_PAUSE_MS


class Applier:
    def __init__(
        self,
        db: store.Store,
        registry: registry_.Registry,
        ingestor: ingest_.Ingestor,
        clock: clock_.Clock,
        *,
        lease_ms: int,
        rng: random.Random | None = None,
        reload_functions: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._reload_functions = reload_functions
        """Reads the registry again (a server's): an invoke may target a function another
        server synced moments ago, before this one's periodic reload saw it."""
        self._ingestor = ingestor
        self._clock = clock
        self._lease_ms = lease_ms
        self._rng = rng or random.Random()

    def now_ms(self) -> int:
        return self._clock.now_ms()

    # calls
    async def mark_running(self, run_id: str) -> None:
        await self._db.mark_run_started(run_id, self._clock.now_ms())

    async def checkpoint(self, item: records.QueueItem, run_id: str, op: models.Op, started_at: int) -> None:
        """Durably record a step that ran inline; the call then goes on with the next step."""
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            # The lease is the fence here: no other item of the run is in flight during a
            # discovery call, so only the sequence number is taken from the run row.
            step = records.StepRecord(
                run_id=run_id,
                step_id=op.id,
                name=op.label,
                kind="run",
                result={"data": op.data},
                seq=-1,
                attempts=item.attempt + 1,
                started_at=started_at,
                ended_at=now,
            )
            if await tx.record_checkpoint(step) is None:  # the run ended (e.g. was cancelled)
                raise transitions.LeaseLostError(item.id)
            observe.step_recorded(run_id, step.name, step.kind, started_at, now)
            item.attempt = 0  # the item now stands for the call after this step
            item.available_at = now + self._lease_ms
            if not await tx.renew_item(item, item.claims):  # the call goes on: keep its slot
                raise transitions.LeaseLostError(item.id)
        item.claims += 1  # our new lease token, once the reschedule is committed

    async def apply_outcome(
        self,
        item: records.QueueItem,
        run_id: str,
        fn: registry_.FunctionSpec,
        outcome: responses.Outcome,
        started_at: int,
    ) -> Applied:
        await self._know_invoked_functions(outcome)
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            run = await tx.lock_run(run_id)
            if run is None or run.status.is_terminal:
                await tx.complete_item(item.id, item.claims)
                return Applied()
            await transitions.mark_running(tx, run, now)
            if isinstance(outcome, responses.Completed):
                await self._require_complete(tx, item)
                await self._end(tx, run, records.RunStatus.COMPLETED, now, output=outcome.output)
                return Applied(ended=True)
            if isinstance(outcome, responses.Errored):
                return await self._errored(tx, run, item, fn, outcome, now)
            return await self._ops(tx, run, item, fn, outcome, started_at, now)

    async def _know_invoked_functions(self, outcome: responses.Outcome) -> None:
        """Read the registry again if ``outcome`` invokes a function it does not hold, before
        the transaction (a reload may write, as it registers crons)."""
        if self._reload_functions is None or not isinstance(outcome, responses.Ops):
            return
        for op in outcome.ops:
            if op.op is opcodes.Opcode.INVOKE_FUNCTION:
                target_id = str((op.opts or {}).get("function_id", ""))
                if self._registry.get(target_id) is None:
                    await self._reload_functions()
                    return

    async def fail_run(self, item: records.QueueItem, run_id: str, error: dict[str, Any]) -> Applied:
        """End a run that cannot be called at all (e.g. its function is not registered)."""
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            run = await tx.lock_run(run_id)
            await self._require_complete(tx, item)
            if run is None or run.status.is_terminal:
                return Applied()
            await self._end(tx, run, records.RunStatus.FAILED, now, error=error)
            return Applied(ended=True)

    async def drop(self, item: records.QueueItem) -> None:
        async with self._db.transaction() as tx:
            await tx.complete_item(item.id, item.claims)

    # timers
    async def wake(self, item: records.QueueItem) -> None:
        """A sleep is over: record it and continue the run."""
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            run = await tx.lock_run(item.run_id)
            if run is None or run.status.is_terminal or item.step_id is None:
                await tx.complete_item(item.id, item.claims)
                return
            await transitions.record_step(
                tx,
                run,
                step_id=item.step_id,
                name=str(item.payload.get("name", item.step_id)),
                kind="sleep",
                result=None,
                attempts=1,
                started_at=int(item.payload.get("since", now)),
                now=now,
            )
            if not await transitions.continue_if_ready(tx, run, now, reuse=(item, item.claims)):
                await self._require_complete(tx, item)
            await tx.update_run(run)

    async def pause_timeout(self, item: records.QueueItem) -> None:
        """A wait or invoke expired: its step resolves to None (wait) or a timeout error (invoke)."""
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            pause = await tx.get_pause(str(item.payload.get("pause_id")))
            if pause is None or not await tx.delete_pause(pause.id):
                await tx.complete_item(item.id, item.claims)
                return
            run = await tx.lock_run(pause.run_id)
            if run is None or run.status.is_terminal:
                await tx.complete_item(item.id, item.claims)
                return
            is_wait = pause.kind is records.PauseKind.WAIT
            await transitions.record_step(
                tx,
                run,
                step_id=pause.step_id,
                name=str(item.payload.get("name", pause.step_id)),
                kind="wait" if is_wait else "invoke",
                result=None if is_wait else {"error": INVOKE_TIMEOUT_ERROR},
                attempts=1,
                started_at=pause.created_at,
                now=now,
            )
            if not await transitions.continue_if_ready(tx, run, now, reuse=(item, item.claims)):
                await self._require_complete(tx, item)
            await tx.update_run(run)

    async def flow_timeout(self, item: records.QueueItem) -> bool:
        """A ``timeouts`` timer is due (``engine.flow_timers``); True if it cancelled the run."""
        return await flow_timers.fire(self._db, self._registry, self._ingestor, self._clock, item)

    # internals
    async def _require_complete(self, tx: store.Transaction, item: records.QueueItem) -> None:
        if not await tx.complete_item(item.id, item.claims):
            raise transitions.LeaseLostError(item.id)

    async def _retry(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        item: records.QueueItem,
        delay_ms: int | None,
        now: int,
        *,
        app_answered: bool = True,
    ) -> Applied:
        item.available_at = now + (
            delay_ms if delay_ms is not None else backoff.retry_delay_ms(item.attempt, self._rng)
        )
        item.attempt += 1
        if app_answered:  # a later outage starts its own grace period
            item.payload = {key: value for key, value in item.payload.items() if not key.startswith("app_down")}
        if not await tx.reschedule_item(item, item.claims):
            raise transitions.LeaseLostError(item.id)
        await tx.update_run(run)
        return Applied()

    async def _end(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        status: records.RunStatus,
        now: int,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        lifecycle = await transitions.end_run(tx, run, status, now, output=output, error=error)
        await flow_timers.clean_up(tx, self._registry.get(run.function_id), run)
        observe.run_ended(run)
        try:
            await self._ingestor.ingest_lifecycle(tx, lifecycle, now)
        except errors.SerializationError:
            # Checked before any statement runs, so the transaction is intact: the run still ends.
            logger.exception("run %s ended, but its lifecycle events could not be stored", run.id)

    async def _errored(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        item: records.QueueItem,
        fn: registry_.FunctionSpec,
        outcome: responses.Errored,
        now: int,
    ) -> Applied:
        if outcome.retriable and await self._wait_for_app(tx, run, item, outcome, now):
            return Applied()
        if outcome.retriable and item.attempt + 1 < fn.max_attempts:
            app_answered = outcome.error.get("name") not in TRANSPORT_ERRORS
            return await self._retry(tx, run, item, outcome.retry_after_ms, now, app_answered=app_answered)
        await self._require_complete(tx, item)
        await self._end(tx, run, records.RunStatus.FAILED, now, error=outcome.error)
        return Applied(ended=True)

    async def _wait_for_app(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        item: records.QueueItem,
        outcome: responses.Errored,
        now: int,
    ) -> bool:
        """An app that cannot be reached (down, restarting, deploying) does not use up a step's
        attempts: the call is retried with backoff for ``APP_DOWN_GRACE_MS``, then counts as failed."""
        if outcome.error.get("name") not in TRANSPORT_ERRORS:
            return False
        observe.dispatch_error(str(outcome.error.get("name")))
        since = int(item.payload.get("app_down_since", now))
        if now - since >= APP_DOWN_GRACE_MS:
            return False
        tries = int(item.payload.get("app_down_tries", 0))
        item.payload = item.payload | {"app_down_since": since, "app_down_tries": tries + 1}
        item.available_at = now + min(APP_DOWN_MAX_DELAY_MS, backoff.retry_delay_ms(tries, self._rng))
        if not await tx.reschedule_item(item, item.claims):
            raise transitions.LeaseLostError(item.id)
        await tx.update_run(run)
        return True

    async def _ops(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        item: records.QueueItem,
        fn: registry_.FunctionSpec,
        outcome: responses.Ops,
        started_at: int,
        now: int,
    ) -> Applied:
        ops = outcome.ops
        for op in ops:
            if op.op is opcodes.Opcode.STEP_ERROR and not outcome.no_retry and item.attempt + 1 < fn.max_attempts:
                return await self._retry(tx, run, item, outcome.retry_after_ms, now)
        recorded = False
        for op in ops:
            if op.op is opcodes.Opcode.RUN_COMPLETE:
                await self._require_complete(tx, item)
                await self._end(tx, run, records.RunStatus.COMPLETED, now, output=op.data)
                return Applied(ended=True)
            recorded = await self._apply_op(tx, run, item, op, started_at, now) or recorded
        if len(ops) > 1:
            run.disable_immediate = True
        reused = recorded and await transitions.continue_if_ready(tx, run, now, reuse=(item, item.claims))
        if not reused:
            await self._require_complete(tx, item)
        await tx.update_run(run)
        return Applied()

    async def _apply_op(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        item: records.QueueItem,
        op: models.Op,
        started_at: int,
        now: int,
    ) -> bool:
        """Apply one op; True if it recorded a step result now (rather than adding to pending)."""
        kind = op.op
        if kind in opcodes.COMPLETED_STEP_OPS:
            return await self._record(tx, run, op, {"data": op.data}, item, started_at, now)
        if kind in (opcodes.Opcode.STEP_ERROR, opcodes.Opcode.STEP_FAILED):
            error = op.error or models.error_body("Error", "step failed")
            return await self._record(tx, run, op, {"error": error}, item, started_at, now)
        if kind is opcodes.Opcode.STEP_PLANNED:
            await self._enqueue_for(tx, run, op, records.ItemKind.STEP, transitions.continuation_time(run, now), now)
            return False
        if kind is opcodes.Opcode.SLEEP:
            await self._enqueue_for(tx, run, op, records.ItemKind.WAKE, _sleep_until_ms(op, now), now)
            return False
        if kind is opcodes.Opcode.WAIT_FOR_EVENT:
            return await self._wait(tx, run, item, op, started_at, now)
        if kind is opcodes.Opcode.INVOKE_FUNCTION:
            return await self._invoke(tx, run, item, op, started_at, now)
        unsupported = models.error_body("UnsupportedOp", f"Stepline does not support the {kind.value} op yet")
        return await self._record(tx, run, op, {"error": unsupported}, item, started_at, now)

    async def _record(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        op: models.Op,
        result: Any,
        item: records.QueueItem,
        started_at: int,
        now: int,
    ) -> bool:
        kind = _STEP_KINDS.get(op.op) or str((op.opts or {}).get("type") or "step.run").removeprefix("step.")
        await transitions.record_step(
            tx,
            run,
            step_id=op.id,
            name=op.label,
            kind=kind,
            result=result,
            attempts=item.attempt + 1,
            started_at=started_at,
            now=now,
        )
        return True

    async def _enqueue_for(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        op: models.Op,
        kind: records.ItemKind,
        available_at: int,
        now: int,
        payload: dict[str, Any] | None = None,
    ) -> str:
        item_id = transitions.new_id()
        await tx.enqueue(
            records.QueueItem(
                id=item_id,
                run_id=run.id,
                kind=kind,
                available_at=available_at,
                step_id=op.id,
                payload={"name": op.label, "since": now} | (payload or {}),
                created_at=now,
            )
        )
        if op.id not in run.pending:
            run.pending.append(op.id)
        return item_id

    async def _wait(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        item: records.QueueItem,
        op: models.Op,
        started_at: int,
        now: int,
    ) -> bool:
        opts = op.opts or {}
        expression = opts.get("if")
        if expression:
            try:
                expressions.compile_expression(str(expression))
            except errors.ExpressionError as exc:
                error = models.error_body("ExpressionError", f"wait_for_event {op.label!r}: {exc}")
                return await self._record(tx, run, op, {"error": error}, item, started_at, now)
        await self._pause(
            tx,
            run,
            op,
            records.PauseKind.WAIT,
            expires_at=_timeout_ms(opts.get("timeout"), now),
            now=now,
            event_name=str(opts.get("event") or op.name),
            expression=str(expression) if expression else None,
        )
        return False

    async def _invoke(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        item: records.QueueItem,
        op: models.Op,
        started_at: int,
        now: int,
    ) -> bool:
        opts = op.opts or {}
        target_id = str(opts.get("function_id", ""))
        if self._registry.get(target_id) is None:
            error = models.error_body("FunctionNotFoundError", f"invoke {op.label!r}: no function {target_id!r}")
            return await self._record(tx, run, op, {"error": error}, item, started_at, now)
        correlation = f"{run.id}.{op.id}"
        expires_at = _timeout_ms(opts.get("timeout"), now)
        await self._pause(
            tx, run, op, records.PauseKind.INVOKE, expires_at=expires_at, now=now, correlation=correlation
        )
        payload = opts.get("payload") or {}
        data = dict(payload.get("data") or {})
        data["_inngest"] = {
            "fn_id": target_id,
            "correlation_id": correlation,
            "expire": expires_at,
            "source_app_id": run.function_id,
            "source_fn_id": run.function_id,
        }
        invoked = {"name": transitions.INVOKED_EVENT, "data": data, "id": correlation}
        await self._ingestor.ingest(tx, [invoked], now)
        return False

    async def _pause(
        self,
        tx: store.Transaction,
        run: records.RunRecord,
        op: models.Op,
        kind: records.PauseKind,
        *,
        expires_at: int,
        now: int,
        event_name: str | None = None,
        expression: str | None = None,
        correlation: str | None = None,
    ) -> None:
        pause_id = transitions.new_id()
        timeout_item_id = await self._enqueue_for(
            tx, run, op, records.ItemKind.PAUSE_TIMEOUT, expires_at, now, payload={"pause_id": pause_id}
        )
        await tx.insert_pause(
            records.PauseRecord(
                id=pause_id,
                run_id=run.id,
                step_id=op.id,
                kind=kind,
                expires_at=expires_at,
                created_at=now,
                timeout_item_id=timeout_item_id,
                event_name=event_name,
                expression=expression,
                event=run.events[0] if run.events else {},
                correlation_id=correlation,
                step_name=op.label,
            )
        )
