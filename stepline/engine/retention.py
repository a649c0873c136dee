"""Retention: finished history older than the retention period is deleted.

As Temporal's namespace retention and Inngest's history retention do, only what can never matter
again goes: runs that ended (completed, failed, cancelled, skipped) longer ago than the period,
with their steps, queue items, pauses and concurrency keys; tasks that ended that long ago, with
their change log; events received that long ago that no remaining run (nor a task that has not
ended) refers to; idempotency reservations that expired; quota uses whose own window has passed
(and that are older than the period too). Nothing of a run or task that has not ended is touched.

Flow-control state is not history: rows of ``flow_keys`` and ``throttle_keys`` go, whatever the
period, once they are equivalent to no row at all (a rate limit or throttle whose arrival time
has passed, a singleton whose run has ended, a debounce or batch with nothing pending), so that
deleting them can change no later decision (the conditions are with the queries, in each
backend's ``queries.sql``). Expired idempotency reservations go by the same rule: both are
deleted whatever the period, but only while retention is on.

Every engine that executes runs the loop (the embedded engine and every server): a first pass
shortly after start, then one a minute. A pass deletes in batches, each its own short
transaction (on SQLite one turn of the single writer; on PostgreSQL rows locked with SKIP LOCKED,
so servers sharing a database purge at once without waiting on or failing each other), until a
batch comes back short. A failing pass is logged and tried again at the next.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta

from stepline import errors
from stepline.engine import clock as clock_
from stepline.engine import observe
from stepline.protocol import durations
from stepline.storage import records, store

logger = logging.getLogger("stepline.engine")

DEFAULT = timedelta(days=7)
"""The retention period unless told otherwise (``--retention``, ``Engine(retention=...)``)."""
MINIMUM = timedelta(minutes=1)
"""The shortest period accepted: a run must outlive the calls that wait for it to end."""
MAXIMUM = timedelta(days=36_500)
"""The longest period accepted (a century): longer ones are 'forever' in all but name, and past
``timedelta``'s range they could not even be represented."""
OFF = ("0", "off")
"""Values that turn retention off (finished history is kept forever)."""
_TIME_STRING = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w))+")
"""The shape of a time string (``protocol.durations``)."""

FIRST_PASS_S = 5.0
"""Seconds after start before the first pass: start-up work (syncs, migrations) goes first."""
INTERVAL_S = 60.0
"""Seconds between passes."""
BATCH = 500
"""Rows per batch (one transaction) for tasks, events, idempotency keys, quota uses and flow-control
keys."""
RUN_BATCH = 100
"""Runs per batch: each brings its steps along, so a batch of runs is many more rows."""


def parse(value: timedelta | str | None, name: str = "retention") -> timedelta | None:
    """The retention period ``value`` means: a ``timedelta`` or a time string (``"7d"``, ``"12h"``,
    ``"30m"``), None when off (``None``, ``"0"``, ``"off"``, a zero duration). ``ConfigurationError``
    naming ``name`` for anything else, or for a period under a minute or over a century."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in OFF:
            return None
        millis = _string_millis(text, value, name)
    elif isinstance(value, timedelta):
        try:
            millis = durations.to_milliseconds(value)
        except errors.ConfigurationError:  # beyond what a duration may be
            raise _too_long(name, value) from None
    else:
        raise errors.ConfigurationError(
            f"{name} must be a timedelta, a time string such as '7d', or None (got {type(value).__name__})"
        )
    if millis == 0:
        return None
    if millis < durations.to_milliseconds(MINIMUM):
        raise errors.ConfigurationError(
            f"{name} must be at least 1m, or 0/off to keep finished history forever (got {value!r})"
        )
    if millis > durations.to_milliseconds(MAXIMUM):
        raise _too_long(name, value)
    return timedelta(milliseconds=millis)


def _string_millis(text: str, value: str, name: str) -> int:
    try:
        return durations.parse_duration_ms(text)
    except (errors.ConfigurationError, OverflowError):
        # A time string refused although it has the shape of one was refused for its length
        # (or overflowed the float it is summed in): say so, rather than that it is no duration.
        if _TIME_STRING.fullmatch(text):
            raise _too_long(name, value) from None
        raise errors.ConfigurationError(
            f"{name} must be a duration such as '7d', '12h' or '30m', or 'off' to keep finished history "
            f"forever (got {value!r})"
        ) from None


def _too_long(name: str, value: object) -> errors.ConfigurationError:
    return errors.ConfigurationError(
        f"{name} must be at most {MAXIMUM.days}d; use 0/off to keep finished history forever (got {value!r})"
    )


class Retention:
    """Deletes ``db``'s finished history older than ``period`` (see the module docstring)."""

    def __init__(
        self,
        db: store.Store,
        clock: clock_.Clock,
        period: timedelta,
        *,
        batch: int = BATCH,
        run_batch: int = RUN_BATCH,
    ) -> None:
        self._db = db
        self._clock = clock
        self.period = period
        self._period_ms = durations.to_milliseconds(period)
        self._batch = batch
        self._run_batch = run_batch

    async def purge(self) -> dict[str, int]:
        """One pass: every kind of expired history, then spent flow-control state, batch after
        batch until none is left; returns the rows deleted per table. Runs go first, so that the
        events and tasks only they referred to go in the same pass (and the singleton keys of
        deleted runs too)."""
        now = self._clock.now_ms()
        before = now - self._period_ms
        kinds: list[tuple[int, Callable[[int], Awaitable[records.Purged]]]] = [
            (self._run_batch, lambda limit: self._db.purge_runs(before, limit)),
            (self._batch, lambda limit: self._db.purge_tasks(before, limit)),
            (self._batch, lambda limit: self._db.purge_events(before, limit)),
            (self._batch, lambda limit: self._db.purge_idempotency_keys(now, limit)),
            (self._batch, lambda limit: self._db.purge_quota_uses(now, before, limit)),
            (self._batch, lambda limit: self._db.purge_flow_keys(now, limit)),
            (self._batch, lambda limit: self._db.purge_throttle_keys(now, limit)),
        ]
        totals: dict[str, int] = {}
        for limit, batch in kinds:
            while True:
                purged = await batch(limit)
                for table, count in purged.rows.items():
                    totals[table] = totals.get(table, 0) + count
                    observe.retention_deleted(table, count)  # counted per batch: a failing pass still tells
                if not purged.full:
                    break
        if totals:
            summary = ", ".join(f"{count} {table}" for table, count in sorted(totals.items()))
            logger.info(
                "retention deleted finished history older than %s: %s",
                durations.format_duration_ms(self._period_ms),
                summary,
            )
        return totals

    async def run_forever(self) -> None:
        """Pass after pass until cancelled (the engine stopping)."""
        await asyncio.sleep(FIRST_PASS_S)
        while True:
            try:
                await self.purge()
            except Exception:
                observe.retention_failed()
                logger.exception("deleting finished history failed; retrying in %.0f s", INTERVAL_S)
            await asyncio.sleep(INTERVAL_S)
