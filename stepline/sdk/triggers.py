"""What starts a function: an event (optionally filtered by CEL) or a cron schedule."""

from __future__ import annotations

import dataclasses
import datetime
import zoneinfo
from typing import Any

import croniter

from stepline import errors
from stepline.protocol import expressions
from stepline.sdk import events


@dataclasses.dataclass(frozen=True, slots=True)
class EventTrigger:
    event: str
    if_exp: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"event": self.event}
        if self.if_exp:
            wire["expression"] = self.if_exp
        return wire


@dataclasses.dataclass(frozen=True, slots=True)
class CronTrigger:
    schedule: str
    tz: str | None = None

    @property
    def wire_schedule(self) -> str:
        """The schedule as the protocol carries it: ``TZ=<zone> <expr>`` when a zone is set."""
        return f"TZ={self.tz} {self.schedule}" if self.tz else self.schedule

    def to_wire(self) -> dict[str, Any]:
        return {"cron": self.wire_schedule}


Trigger = EventTrigger | CronTrigger


def on_event(name: str, if_exp: str | None = None) -> EventTrigger:
    """Run the function for each event called ``name`` for which ``if_exp`` (CEL over ``event``) is true."""
    events.validate_event_name(name, allow_internal=True)
    if if_exp is not None:
        expressions.compile_expression(if_exp)
    return EventTrigger(name, if_exp)


def on_cron(schedule: str, tz: str | None = None) -> CronTrigger:
    """Run the function on a 5-field cron schedule (``"*/5 * * * *"``), in time zone ``tz`` (default UTC)."""
    schedule, tz = split_cron_timezone(schedule, tz)
    if not croniter.croniter.is_valid(schedule):
        raise errors.ConfigurationError(f"invalid cron schedule {schedule!r}: expected 5 fields like '*/5 * * * *'")
    zone: zoneinfo.ZoneInfo | datetime.timezone = datetime.UTC
    if tz is not None:
        try:
            zone = zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            # OSError: a zone name longer than the file system allows (the name is a path).
            raise errors.ConfigurationError(f"unknown time zone {tz!r} for cron schedule {schedule!r}") from None
    try:
        # A valid expression can still name a date that never comes ("0 0 31 2 *"); croniter
        # only finds that out when asked for the next time, so ask now rather than at sync.
        croniter.croniter(schedule, datetime.datetime.now(zone)).get_next(datetime.datetime)
    except croniter.CroniterBadDateError:
        raise errors.ConfigurationError(f"cron schedule {schedule!r} never fires") from None
    return CronTrigger(schedule, tz)


def split_cron_timezone(schedule: str, tz: str | None = None) -> tuple[str, str | None]:
    """Separate a ``TZ=Zone`` / ``CRON_TZ=Zone`` prefix from a cron expression."""
    text = schedule.strip()
    for prefix in ("TZ=", "CRON_TZ="):
        if text.startswith(prefix):
            zone, _, rest = text[len(prefix) :].partition(" ")
            return rest.strip(), tz or zone
    return text, tz
