"""Cron triggers: fire ``inngest/scheduled.timer`` runs when a schedule comes due.

Each function's next fire time lives in the ``crons`` table; a fire advances it with a
compare-and-set, so with several engines on one database each tick fires once. The event
id is the scheduled time, so even a duplicate fire starts no second run.
"""

from __future__ import annotations

import logging
import zoneinfo
from datetime import UTC, datetime

import croniter

from stepline.engine import clock as clock_
from stepline.engine import ingest as ingest_
from stepline.engine import registry as registry_
from stepline.engine import transitions
from stepline.sdk import triggers
from stepline.storage import records, store

logger = logging.getLogger("stepline.cron")


def next_fire_ms(schedule: str, after_ms: int) -> int:
    """The first time strictly after ``after_ms`` that ``schedule`` (with optional ``TZ=`` prefix) fires."""
    expression, tz = triggers.split_cron_timezone(schedule)
    zone = zoneinfo.ZoneInfo(tz) if tz else UTC
    base = datetime.fromtimestamp(after_ms / 1000, tz=zone)
    upcoming: datetime = croniter.croniter(expression, base).get_next(datetime)
    return int(upcoming.timestamp() * 1000)


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


class CronScheduler:
    def __init__(
        self, db: store.Store, registry: registry_.Registry, ingestor: ingest_.Ingestor, clock: clock_.Clock
    ) -> None:
        self._db = db
        self._registry = registry
        self._ingestor = ingestor
        self._clock = clock

    async def register(self, app_id: str) -> None:
        """Store each cron function's schedule, keeping the next fire time of unchanged ones."""
        now = self._clock.now_ms()
        crons = [spec for spec in self._registry.cron_functions() if spec.app_id == app_id]
        async with self._db.transaction() as tx:
            for spec in crons:
                assert spec.cron is not None
                existing = await tx.get_cron(spec.id)
                if existing is None or existing.schedule != spec.cron:
                    next_at = next_fire_ms(spec.cron, now)
                    await tx.upsert_cron(records.CronRecord(spec.id, spec.cron, next_at))
            await tx.delete_crons_except([spec.id for spec in crons], app_id)

    async def fire_due(self) -> list[str]:
        """Start the runs of every schedule that is due; returns their run ids."""
        now = self._clock.now_ms()
        started: list[str] = []
        for cron in await self._db.due_crons(now):
            fn = self._registry.get(cron.function_id)
            if fn is None:
                continue
            # Fire once for the due time even if several were missed while no engine ran.
            following = next_fire_ms(cron.schedule, max(now, cron.next_fire_at))
            scheduled = _rfc3339(cron.next_fire_at)
            async with self._db.transaction() as tx:
                if not await tx.advance_cron(cron.function_id, cron.next_fire_at, following):
                    continue
                event = ingest_.normalise_event(
                    {
                        "name": transitions.CRON_EVENT,
                        "id": scheduled,
                        "data": {"cron": cron.schedule, "scheduledAt": scheduled, "fireAt": _rfc3339(now)},
                    },
                    now,
                )
                await tx.insert_event(event)
                run_id = await self._ingestor.start_run(tx, fn, [event.to_wire()], event.internal_id, now)
                if run_id is not None:
                    started.append(run_id)
        return started

    async def next_due_ms(self) -> int | None:
        due = await self._db.due_crons(2**62)
        return min((cron.next_fire_at for cron in due), default=None)
