"""The executor: claim ready queue items with a lease, run them, apply the result.

Runs either in the background (``run_forever``: claims while it has free slots, sleeps until
the next item is due or a commit wakes it) or in burst mode for tests (``run_until_idle``).
A heartbeat extends the leases of in-flight items, so a long step is never claimed twice
while its worker lives; if the worker dies, the lease expires and another claims it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from stepline import errors
from stepline.engine import apply as apply_
from stepline.engine import clock as clock_
from stepline.engine import dispatch, flow_timers, transitions
from stepline.engine import registry as registry_
from stepline.protocol import models, responses
from stepline.sdk import replay
from stepline.storage import records, store

logger = logging.getLogger("stepline.executor")


class Executor:
    def __init__(
        self,
        db: store.Store,
        registry: registry_.Registry,
        applier: apply_.Applier,
        transport: dispatch.Transport,
        clock: clock_.Clock,
        *,
        concurrency: int,
        lease_ms: int,
        poll_interval_s: float,
        on_run_ended: Callable[[str], None],
        checkpointing: bool = True,
        reload_functions: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._applier = applier
        self._transport = transport
        self._clock = clock
        self._concurrency = concurrency
        self._lease_ms = lease_ms
        self._poll_interval_s = poll_interval_s
        self._on_run_ended = on_run_ended
        self._checkpointing = checkpointing
        self._reload_functions = reload_functions
        """Reads the registry again from where functions are kept (a server's database): a run
        may name a function that another server synced moments ago, before this one's periodic
        reload saw it."""
        self._inflight: dict[str, tuple[records.QueueItem, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._extending = asyncio.Lock()
        """Held by the heartbeat from reading the in-flight leases to extending them, and by
        ``_retry_soon`` to shorten one: a heartbeat that read a lease before its item failed
        then extends it before the shortening, never after."""

    # background mode
    async def run_forever(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(), name="stepline-heartbeat")
        try:
            while not self._stopping:
                _, next_at = await self._claim_and_start()
                if len(self._inflight) >= self._concurrency:
                    await self._wait_for_slot()  # full: nothing to claim until a call ends
                else:
                    # Slots to spare: the claim leased every ready item it could, and the peek
                    # says when the next one is due (at once if a limit's time budget left some).
                    # Work made ready since wakes the wait (commits set the wake-up), so claiming
                    # again now would only find nothing: on PostgreSQL a round trip per call.
                    await self._wait(self._timeout_until(next_at))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; give in-flight calls ``grace_s`` to finish, then cancel them (their
        leases expire and another executor retries them)."""
        self._stopping = True
        self._slot_freed.set()
        tasks = [task for _, task in self._inflight.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def abandon(self) -> list[asyncio.Task[None]]:
        """Cancel the calls still in flight, without waiting (a stop that was itself cancelled
        before its grace ran out); returns them, for the caller to wait on if it can."""
        self._stopping = True
        abandoned = [task for _, task in self._inflight.values() if not task.done()]
        for task in abandoned:
            task.cancel()
        return abandoned

    # burst mode
    async def run_until_idle(self) -> int:
        """Process ready items until none is ready and none is in flight; returns how many ran."""
        processed = 0
        while True:
            claimed, _ = await self._claim_and_start()
            processed += claimed
            if not self._inflight:
                if claimed == 0:
                    return processed
                continue
            await asyncio.wait([task for _, task in self._inflight.values()], return_when=asyncio.FIRST_COMPLETED)

    # internals
    async def _claim_and_start(self) -> tuple[int, int | None]:
        """Claim what the free slots allow and start it; how many items that was, and the
        queue's earliest ``available_at`` after the claim (the claim's own round trip)."""
        free = self._concurrency - len(self._inflight)
        if free <= 0 or self._stopping:
            return 0, None
        now = self._clock.now_ms()
        claimed = await self._db.claim_and_peek(now, free, now + self._lease_ms)
        items = claimed.items
        for item in items:
            task = asyncio.create_task(self._process_guarded(item), name=f"stepline-item-{item.id}")
            self._inflight[item.id] = (item, task)
            task.add_done_callback(self._finished_callback(item.id))
        return len(items), claimed.next_available_at

    def _finished_callback(self, item_id: str) -> Callable[[asyncio.Task[None]], None]:
        def finished(_task: asyncio.Task[None]) -> None:
            self._leave(item_id)

        return finished

    def _leave(self, item_id: str) -> None:
        """Take an item out of the in-flight set. Only a full executor waits for a slot to free:
        one with slots to spare waits for work, and a finished item is none (work it scheduled
        wakes the executor when its transaction commits)."""
        was_full = len(self._inflight) >= self._concurrency
        if self._inflight.pop(item_id, None) is not None and was_full:
            self._slot_freed.set()

    def _timeout_until(self, next_at: int | None) -> float:
        """How long to wait for work: until the next item is due, at most a poll interval."""
        timeout = self._poll_interval_s
        if next_at is not None:
            timeout = min(timeout, max(0.0, (next_at - self._clock.now_ms()) / 1000))
        return timeout

    async def _wait_for_slot(self) -> None:
        self._slot_freed.clear()
        if len(self._inflight) >= self._concurrency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), timeout=self._poll_interval_s)

    async def _wait(self, timeout: float) -> None:
        if timeout <= 0:
            await asyncio.sleep(0)
            return
        self._slot_freed.clear()
        work = asyncio.ensure_future(self._db.wait_for_work(timeout))
        slot = asyncio.ensure_future(self._slot_freed.wait())
        _, pending = await asyncio.wait([work, slot], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _heartbeat(self) -> None:
        interval = self._lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            async with self._extending:
                leases = [(item.id, item.claims) for item, task in self._inflight.values() if not task.done()]
                if not leases:
                    continue
                try:
                    held = await self._db.extend_leases(leases, self._clock.now_ms() + self._lease_ms)
                except Exception:
                    logger.exception("extending leases failed; will retry")
                    continue
            # An item whose token moved on meanwhile (a checkpoint re-leased it) was not lost.
            lost = [
                item_id
                for item_id, claims in leases
                if item_id not in held and item_id in self._inflight and self._inflight[item_id][0].claims == claims
            ]
            if lost:
                logger.warning("lost the lease of %d in-flight item(s): another worker will run them", len(lost))

    async def _process_guarded(self, item: records.QueueItem) -> None:
        try:
            failed = not await self._process_logged(item)
        finally:
            # Leave the in-flight set before yielding again, so a heartbeat never extends the
            # lease of an item this worker has finished with.
            self._leave(item.id)
        if failed:
            await self._retry_soon(item)

    async def _process_logged(self, item: records.QueueItem) -> bool:
        """Process ``item``; False if it failed and must be claimed again."""
        try:
            await self.process(item)
        except transitions.LeaseLostError:
            logger.info("lease of item %s was lost; its new holder carries on", item.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A storage failure (the database restarted, a statement failed): whatever the
            # failed transaction wrote was rolled back, and the item goes to a claimer again.
            logger.exception(
                "processing queue item %s failed; it will be retried in %g s",
                item.id,
                self._retry_delay_ms(item) / 1000,
            )
            return False
        return True

    def _retry_delay_ms(self, item: records.QueueItem) -> int:
        """1 s after an item's first failure, doubling with each claim, up to a lease: a restart of
        the database costs the runs it cut a second instead of a lease, and an item that keeps
        failing is not retried in a tight loop."""
        return int(min(self._lease_ms, 1000 * 2 ** min(max(0, item.claims - 1), 16)))

    async def _retry_soon(self, item: records.QueueItem) -> None:
        """Shorten the failed item's lease to ``_retry_delay_ms`` (only while this worker still
        holds it: the lease is matched on its claim count, as the heartbeat's). If that fails too,
        the item waits out its lease, as it would have anyway."""
        try:
            async with self._extending:  # after any heartbeat that still counted the item
                until = self._clock.now_ms() + self._retry_delay_ms(item)
                await self._db.extend_leases([(item.id, item.claims)], until)
        except Exception as exc:
            logger.warning("item %s will be retried after its lease: shortening it failed: %s", item.id, exc)

    async def process(self, item: records.QueueItem) -> None:
        if item.kind is records.ItemKind.WAKE:
            await self._applier.wake(item)
            return
        if item.kind is records.ItemKind.PAUSE_TIMEOUT:
            await self._applier.pause_timeout(item)
            return
        if item.kind in flow_timers.KINDS:
            if await self._applier.flow_timeout(item):
                self._on_run_ended(item.run_id)
            return
        found = await self._db.get_run_with_steps(item.run_id)  # the steps for the call, in the same round trip
        if found is None or found[0].status.is_terminal:
            await self._applier.drop(item)
            return
        run, steps = found
        fn = await self._function_of(run)
        if fn is None:
            error = models.error_body(
                "FunctionNotFoundError",
                f"no function {run.function_id!r} is registered with this engine; register it and rerun the run",
            )
            if (await self._applier.fail_run(item, run.id, error)).ended:
                self._on_run_ended(run.id)
            return
        if run.status is records.RunStatus.QUEUED:
            await self._applier.mark_running(run.id)
            if fn.flow.changes_queued_runs:  # the run as it started: all of its batch, or skipped
                started = await self._db.get_run(run.id)
                if started is None or started.status.is_terminal:
                    await self._applier.drop(item)
                    return
                run = started
        await self._call(item, run, steps, fn)

    async def _function_of(self, run: records.RunRecord) -> registry_.FunctionSpec | None:
        """The function ``run`` calls; unknown here, the registry is read again before the run
        fails for it (with API servers in front of workers, the app synced through another server)."""
        fn = self._registry.get(run.function_id)
        if fn is None and self._reload_functions is not None:
            await self._reload_functions()
            fn = self._registry.get(run.function_id)
        return fn

    async def _call(
        self,
        item: records.QueueItem,
        run: records.RunRecord,
        steps: list[records.StepRecord],
        fn: registry_.FunctionSpec,
    ) -> None:
        request = dispatch.build_request(run, steps, item, fn)
        started_at = self._clock.now_ms()
        checkpointer = (
            dispatch.CallCheckpointer(self._applier, item, run.id, started_at, asyncio.get_running_loop())
            if self._checkpointing and self._transport.supports_checkpoints
            else None
        )
        try:
            response = await self._transport.call(fn, request, checkpointer)
        except transitions.LeaseLostError:
            raise
        except Exception as exc:
            # Not a user error (those come back as responses): a transport or engine fault.
            response = responses.CallResponse(500, replay.error_to_wire(exc))
        outcome = responses.interpret(response, self._clock.now_ms())
        try:
            applied = await self._applier.apply_outcome(item, run.id, fn, outcome, started_at)
        except errors.SerializationError as exc:
            # A result no retry can make storable: fail the run rather than re-run the call forever.
            applied = await self._applier.fail_run(item, run.id, replay.error_to_wire(exc))
        if applied.ended:
            self._on_run_ended(run.id)
