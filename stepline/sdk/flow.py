"""Flow-control options of ``client.function(...)``: how runs are limited, merged and stopped.

Each class is a frozen value checked when it is built, so a bad option fails where the
function is defined, with a message naming the option. ``to_config()`` gives the option's
part of the function's sync configuration, in exactly the JSON shape the Inngest protocol
uses (``inngest-wire.md`` section 3.4, and what the ``inngest`` Python SDK sends), so a
server treats a function defined here and one defined with an Inngest SDK alike.

Durations are ``timedelta`` values or time strings (``"30s"``, ``"1h30m"``) of whole seconds, at
least one second (a bare number is refused: Inngest's SDK reads it as milliseconds); on the wire they
are written in the largest unit that divides them (``"90s"``, ``"2m"``, ``"1d"``), as the
Inngest SDK writes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from stepline import errors
from stepline.protocol import durations, expressions
from stepline.sdk import events as events_

MAX_CONCURRENCY_LIMITS = 2
MAX_PRIORITY_SECONDS = 600
MAX_DEBOUNCE_PERIOD = timedelta(days=7)
MAX_RATE_LIMIT_PERIOD = timedelta(hours=24)
MAX_THROTTLE_PERIOD = timedelta(days=7)
_WIRE_UNITS: tuple[tuple[int, str], ...] = ((604_800, "w"), (86_400, "d"), (3_600, "h"), (60, "m"), (1, "s"))


def duration_seconds(option: str, field: str, value: object) -> int:
    """``value`` (a timedelta or time string) in whole seconds, refusing anything under 1 s."""
    if isinstance(value, str):
        try:
            value = timedelta(milliseconds=durations.parse_duration_ms(value))
        except errors.ConfigurationError as exc:
            raise errors.ConfigurationError(f"{option}: {field}: {exc}") from None
    if not isinstance(value, timedelta):
        raise errors.ConfigurationError(
            f"{option}: {field} must be a datetime.timedelta or a time string such as '30s'"
            f" (got {type(value).__name__} {value!r})"
        )
    seconds = value.total_seconds()
    if seconds < 1:
        raise errors.ConfigurationError(f"{option}: {field} must be at least 1 second (got {value})")
    if seconds != int(seconds):
        raise errors.ConfigurationError(f"{option}: {field} must be a whole number of seconds (got {value})")
    return int(seconds)


def duration_to_wire(option: str, field: str, value: object) -> str:
    """``value`` as a protocol time string in the largest unit that divides it (``"90s"``, ``"2m"``)."""
    whole = duration_seconds(option, field, value)
    for size, unit in _WIRE_UNITS:
        if whole % size == 0:
            return f"{whole // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds divides by 1")


def check_expression(option: str, field: str, value: object) -> str:
    """A CEL expression that compiles, or a ``ConfigurationError`` naming the option."""
    if not isinstance(value, str):
        raise errors.ConfigurationError(
            f"{option}: {field} must be a CEL expression in a string (got {type(value).__name__} {value!r})"
        )
    try:
        expressions.compile_expression(value)
    except errors.ExpressionError as exc:
        raise errors.ExpressionError(f"{option}: {field} {exc}") from None
    return value


def check_limit(option: str, field: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise errors.ConfigurationError(f"{option}: {field} must be an integer of at least 1 (got {value!r})")
    return value


def _optional_key(option: str, key: str | None) -> None:
    if key is not None:
        check_expression(option, "key", key)


def _with(wire: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``wire`` plus the optional fields that are set (the protocol omits unset ones)."""
    return wire | {name: value for name, value in optional.items() if value is not None}


@dataclasses.dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` steps of the function executing at once; per value of ``key`` (CEL over
    ``event``) when given. ``scope`` is ``"fn"`` (default), ``"env"`` or ``"account"``."""

    limit: int
    key: str | None = None
    scope: Literal["fn", "env", "account"] | None = None

    def __post_init__(self) -> None:
        check_limit("concurrency", "limit", self.limit)
        _optional_key("concurrency", self.key)
        if self.scope not in (None, "fn", "env", "account"):
            raise errors.ConfigurationError(f"concurrency: scope must be 'fn', 'env' or 'account' (got {self.scope!r})")

    def to_config(self) -> dict[str, Any]:
        return _with({"limit": self.limit}, key=self.key, scope=self.scope)


@dataclasses.dataclass(frozen=True, slots=True)
class Throttle:
    """At most ``limit`` run starts per ``period`` (per ``key``), ``burst`` at once; starts
    beyond the rate wait their turn, none is dropped."""

    limit: int
    period: timedelta | str
    burst: int = 1
    key: str | None = None

    def __post_init__(self) -> None:
        check_limit("throttle", "limit", self.limit)
        if duration_seconds("throttle", "period", self.period) > MAX_THROTTLE_PERIOD.total_seconds():
            raise errors.ConfigurationError(f"throttle: period must be at most 7 days (got {self.period})")
        check_limit("throttle", "burst", self.burst)
        _optional_key("throttle", self.key)

    def to_config(self) -> dict[str, Any]:
        wire = {"limit": self.limit, "period": duration_to_wire("throttle", "period", self.period), "burst": self.burst}
        return _with(wire, key=self.key)


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` runs per ``period`` (per ``key``); runs beyond the rate are skipped
    and recorded as skipped, with the reason."""

    limit: int
    period: timedelta | str
    key: str | None = None

    def __post_init__(self) -> None:
        check_limit("rate_limit", "limit", self.limit)
        if duration_seconds("rate_limit", "period", self.period) > MAX_RATE_LIMIT_PERIOD.total_seconds():
            raise errors.ConfigurationError(f"rate_limit: period must be at most 24 hours (got {self.period})")
        _optional_key("rate_limit", self.key)

    def to_config(self) -> dict[str, Any]:
        return _with(
            {"limit": self.limit, "period": duration_to_wire("rate_limit", "period", self.period)}, key=self.key
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Debounce:
    """One run, with the last event, once no event came for ``period`` (per ``key``); or at the
    latest ``timeout`` after the first event of the quiet-period window."""

    period: timedelta | str
    key: str | None = None
    timeout: timedelta | str | None = None

    def __post_init__(self) -> None:
        if duration_seconds("debounce", "period", self.period) > MAX_DEBOUNCE_PERIOD.total_seconds():
            raise errors.ConfigurationError(f"debounce: period must be at most 7 days (got {self.period})")
        if self.timeout is not None:
            duration_to_wire("debounce", "timeout", self.timeout)
        _optional_key("debounce", self.key)

    def to_config(self) -> dict[str, Any]:
        timeout = None if self.timeout is None else duration_to_wire("debounce", "timeout", self.timeout)
        return _with({"period": duration_to_wire("debounce", "period", self.period)}, key=self.key, timeout=timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """One run for up to ``max_size`` events (per ``key``), started when the batch is full or
    ``timeout`` after its first event; the function reads them in ``ctx.events``. Events for
    which ``if_exp`` is false run alone, unbatched."""

    max_size: int
    timeout: timedelta | str
    key: str | None = None
    if_exp: str | None = None

    def __post_init__(self) -> None:
        check_limit("batch_events", "max_size", self.max_size)
        duration_to_wire("batch_events", "timeout", self.timeout)
        _optional_key("batch_events", self.key)
        if self.if_exp is not None:
            check_expression("batch_events", "if_exp", self.if_exp)

    def to_config(self) -> dict[str, Any]:
        wire = {"maxSize": self.max_size, "timeout": duration_to_wire("batch_events", "timeout", self.timeout)}
        return _with(wire, key=self.key, **{"if": self.if_exp})


@dataclasses.dataclass(frozen=True, slots=True)
class Priority:
    """``run``: a CEL expression over ``event`` giving seconds of head start (-600..600) over
    runs of the same function queued at the same time."""

    run: str

    def __post_init__(self) -> None:
        check_expression("priority", "run", self.run)
        check_constant_priority("priority", self.run)

    def to_config(self) -> dict[str, Any]:
        return {"run": self.run}


def check_constant_priority(option: str, source: str) -> None:
    """Refuse a priority expression that does not depend on the event and is out of range.

    An expression reading the event can only be checked when an event arrives (the engine
    clamps it then); one that is a constant, like ``"700"``, is wrong at definition time.
    """
    try:
        value = expressions.evaluate(source, {"event": {}})
    except errors.ExpressionError:
        return  # depends on the event
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_PRIORITY_SECONDS:
        raise errors.ConfigurationError(
            f"{option}: run must give seconds from -{MAX_PRIORITY_SECONDS} to {MAX_PRIORITY_SECONDS} (got {value!r})"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CancelOn:
    """Cancel a run when an ``event`` arrives for which ``if_exp`` is true (CEL over ``event``,
    the run's trigger, and ``async``, the incoming event), within ``timeout`` of the run's
    start (default: as long as the run lives)."""

    event: str
    if_exp: str | None = None
    timeout: timedelta | str | None = None

    def __post_init__(self) -> None:
        try:
            events_.validate_event_name(self.event, allow_internal=True)
        except errors.ConfigurationError as exc:
            raise errors.ConfigurationError(f"cancel_on: {exc}") from None
        if self.if_exp is not None:
            check_expression("cancel_on", "if_exp", self.if_exp)
        if self.timeout is not None:
            duration_to_wire("cancel_on", "timeout", self.timeout)

    def to_config(self) -> dict[str, Any]:
        timeout = None if self.timeout is None else duration_to_wire("cancel_on", "timeout", self.timeout)
        return _with({"event": self.event}, timeout=timeout, **{"if": self.if_exp})


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """Cancel a run not started within ``start`` of being due, or not finished within
    ``finish`` of starting; the run's error says which."""

    start: timedelta | str | None = None
    finish: timedelta | str | None = None

    def __post_init__(self) -> None:
        if self.start is None and self.finish is None:
            raise errors.ConfigurationError("timeouts: give start, finish or both")
        for field in ("start", "finish"):
            value = getattr(self, field)
            if value is not None:
                duration_to_wire("timeouts", field, value)

    def to_config(self) -> dict[str, Any]:
        return _with(
            {},
            start=None if self.start is None else duration_to_wire("timeouts", "start", self.start),
            finish=None if self.finish is None else duration_to_wire("timeouts", "finish", self.finish),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Singleton:
    """At most one run at a time (per ``key``): ``mode="skip"`` skips a new run while one is
    queued or running; ``mode="cancel"`` cancels that one and starts the new run."""

    mode: Literal["skip", "cancel"]
    key: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("skip", "cancel"):
            raise errors.ConfigurationError(f"singleton: mode must be 'skip' or 'cancel' (got {self.mode!r})")
        _optional_key("singleton", self.key)

    def to_config(self) -> dict[str, Any]:
        return _with({"mode": self.mode}, key=self.key)


@dataclasses.dataclass(frozen=True, slots=True)
class FlowOptions:
    """Every flow-control option of one function, as given to ``client.function(...)``."""

    concurrency: tuple[Concurrency, ...] = ()
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    batch_events: Batch | None = None
    priority: Priority | None = None
    cancel_on: tuple[CancelOn, ...] = ()
    idempotency: str | None = None
    timeouts: Timeouts | None = None
    singleton: Singleton | None = None

    def to_config(self) -> dict[str, Any]:
        """The options' fields of the function's sync configuration (unset options omitted)."""
        optional: dict[str, Any] = {
            "concurrency": [item.to_config() for item in self.concurrency] or None,
            "throttle": self.throttle and self.throttle.to_config(),
            "rateLimit": self.rate_limit and self.rate_limit.to_config(),
            "debounce": self.debounce and self.debounce.to_config(),
            "batchEvents": self.batch_events and self.batch_events.to_config(),
            "priority": self.priority and self.priority.to_config(),
            "cancel": [item.to_config() for item in self.cancel_on] or None,
            "idempotency": self.idempotency,
            "timeouts": self.timeouts and self.timeouts.to_config(),
            "singleton": self.singleton and self.singleton.to_config(),
        }
        return _with({}, **optional)


def _typed(option: str, value: object, kind: type[Any]) -> Any:
    if value is not None and not isinstance(value, kind):
        raise errors.ConfigurationError(
            f"{option} must be a stepline.{kind.__name__}(...) (got {type(value).__name__} {value!r})"
        )
    return value


def _typed_list(option: str, value: object, kind: type[Any]) -> tuple[Any, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, kind) else value
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise errors.ConfigurationError(f"{option} must be a list of stepline.{kind.__name__}(...) (got {value!r})")
    return tuple(_typed(option, item, kind) for item in items)


def options(
    *,
    concurrency: object = None,
    throttle: object = None,
    rate_limit: object = None,
    debounce: object = None,
    batch_events: object = None,
    priority: object = None,
    cancel_on: object = None,
    idempotency: object = None,
    timeouts: object = None,
    singleton: object = None,
) -> FlowOptions:
    """Check the keyword arguments of ``client.function(...)`` and gather them."""
    limits = _typed_list("concurrency", concurrency, Concurrency)
    if len(limits) > MAX_CONCURRENCY_LIMITS:
        raise errors.ConfigurationError(
            f"concurrency: at most {MAX_CONCURRENCY_LIMITS} limits per function (got {len(limits)})"
        )
    if idempotency is not None:
        check_expression("idempotency", "key", idempotency)
    if debounce is not None and batch_events is not None:
        raise errors.ConfigurationError("debounce and batch_events cannot be combined: choose one")
    return FlowOptions(
        concurrency=limits,
        throttle=_typed("throttle", throttle, Throttle),
        rate_limit=_typed("rate_limit", rate_limit, RateLimit),
        debounce=_typed("debounce", debounce, Debounce),
        batch_events=_typed("batch_events", batch_events, Batch),
        priority=_typed("priority", priority, Priority),
        cancel_on=_typed_list("cancel_on", cancel_on, CancelOn),
        idempotency=idempotency if isinstance(idempotency, str) else None,
        timeouts=_typed("timeouts", timeouts, Timeouts),
        singleton=_typed("singleton", singleton, Singleton),
    )
