"""The flow-control options acted on when events arrive, read from a function's wire config.

``rateLimit``, ``debounce``, ``batchEvents``, ``cancel``, ``idempotency``, ``timeouts`` and
``singleton`` (``inngest-wire.md`` section 3.4). A function synced from any SDK and one
defined here are parsed by the same code, so a bad option is refused at sync (and when an
embedded engine is built) with a message naming the function and the option's wire field.
Concurrency, throttle and priority are enforced when items are claimed, not here.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from stepline import errors
from stepline.protocol import durations, expressions

MAX_DEBOUNCE_MS = 7 * 86_400_000
MAX_RATE_LIMIT_MS = 86_400_000
MAX_CANCEL_TIMEOUT_MS = 366 * 86_400_000


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitSpec:
    limit: int
    period_ms: int
    key: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class DebounceSpec:
    period_ms: int
    key: str | None
    timeout_ms: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class BatchSpec:
    max_size: int
    timeout_ms: int
    key: str | None
    if_exp: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class CancelSpec:
    event: str
    if_exp: str | None
    timeout_ms: int | None
    until_ms: int | None = None
    """An absolute end instead of ``timeout_ms``: the TypeScript SDK sends a ``Date`` timeout as
    an ISO-8601 time."""


@dataclasses.dataclass(frozen=True, slots=True)
class TimeoutsSpec:
    start_ms: int | None
    finish_ms: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class SingletonSpec:
    mode: str
    key: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class IngestFlow:
    """What happens to a function's runs as its events arrive (all None: nothing special)."""

    rate_limit: RateLimitSpec | None = None
    debounce: DebounceSpec | None = None
    batch: BatchSpec | None = None
    cancel: tuple[CancelSpec, ...] = ()
    idempotency: str | None = None
    timeouts: TimeoutsSpec | None = None
    singleton: SingletonSpec | None = None

    @property
    def active(self) -> bool:
        return self != _NONE

    @property
    def changes_queued_runs(self) -> bool:
        """True when ingest may change a run that is still queued (a debounced run replaced, a
        batch grown): the executor then re-reads the run once it has marked it started."""
        return self.debounce is not None or self.batch is not None


_NONE = IngestFlow()


class _Reader:
    """Reads one function's options, naming the function and field in every error."""

    def __init__(self, fn_id: str) -> None:
        self.fn_id = fn_id

    def fail(self, field: str, message: str) -> errors.ConfigurationError:
        return errors.ConfigurationError(f"function {self.fn_id!r}: {field}: {message}")

    def mapping(self, config: dict[str, Any], field: str) -> dict[str, Any] | None:
        value = config.get(field)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(field, f"must be an object (got {value!r})")
        return value

    def limit(self, value: object, field: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(field, f"must be an integer of at least 1 (got {value!r})")
        return value

    def duration(self, value: object, field: str, *, maximum: int | None = None) -> int:
        if not isinstance(value, str):
            raise self.fail(field, f"must be a time string such as '10s' or '1h' (got {value!r})")
        try:
            milliseconds = durations.parse_duration_ms(value)
        except errors.ConfigurationError as exc:
            raise self.fail(field, str(exc)) from None
        if milliseconds < 1000:
            raise self.fail(field, f"must be at least 1 second (got {value!r})")
        if maximum is not None and milliseconds > maximum:
            raise self.fail(field, f"must be at most {durations.format_duration_ms(maximum)} (got {value!r})")
        return milliseconds

    def optional_duration(self, value: object, field: str, *, maximum: int | None = None) -> int | None:
        return None if value is None else self.duration(value, field, maximum=maximum)

    def expression(self, value: object, field: str) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"must be a CEL expression in a string (got {value!r})")
        try:
            expressions.compile_expression(value)
        except errors.ExpressionError as exc:
            raise errors.ExpressionError(f"function {self.fn_id!r}: {field}: {exc}") from None
        return value


def parse(config: dict[str, Any], fn_id: str) -> IngestFlow:
    """The ingest-time options of ``config``; ``ConfigurationError`` names the bad one."""
    read = _Reader(fn_id)
    rate_limit = debounce = batch = timeouts = singleton = None
    if (raw := read.mapping(config, "rateLimit")) is not None:
        rate_limit = RateLimitSpec(
            limit=read.limit(raw.get("limit"), "rateLimit.limit"),
            period_ms=read.duration(raw.get("period"), "rateLimit.period", maximum=MAX_RATE_LIMIT_MS),
            key=read.expression(raw.get("key"), "rateLimit.key"),
        )
    if (raw := read.mapping(config, "debounce")) is not None:
        debounce = DebounceSpec(
            period_ms=read.duration(raw.get("period"), "debounce.period", maximum=MAX_DEBOUNCE_MS),
            key=read.expression(raw.get("key"), "debounce.key"),
            timeout_ms=read.optional_duration(raw.get("timeout"), "debounce.timeout"),
        )
    if (raw := read.mapping(config, "batchEvents")) is not None:
        batch = BatchSpec(
            max_size=read.limit(raw.get("maxSize"), "batchEvents.maxSize"),
            timeout_ms=read.duration(raw.get("timeout"), "batchEvents.timeout"),
            key=read.expression(raw.get("key"), "batchEvents.key"),
            if_exp=read.expression(raw.get("if"), "batchEvents.if"),
        )
    if debounce is not None and batch is not None:
        raise read.fail("debounce", "cannot be combined with batchEvents: choose one")
    if (raw := read.mapping(config, "timeouts")) is not None:
        timeouts = TimeoutsSpec(
            start_ms=read.optional_duration(raw.get("start"), "timeouts.start"),
            finish_ms=read.optional_duration(raw.get("finish"), "timeouts.finish"),
        )
    if (raw := read.mapping(config, "singleton")) is not None:
        mode = raw.get("mode")
        if mode not in ("skip", "cancel"):
            raise read.fail("singleton.mode", f"must be 'skip' or 'cancel' (got {mode!r})")
        singleton = SingletonSpec(mode=str(mode), key=read.expression(raw.get("key"), "singleton.key"))
    idempotency = config.get("idempotency")
    return IngestFlow(
        rate_limit=rate_limit,
        debounce=debounce,
        batch=batch,
        cancel=_cancel(read, config.get("cancel")),
        idempotency=read.expression(idempotency, "idempotency"),
        timeouts=timeouts,
        singleton=singleton,
    )


def _cancel(read: _Reader, raw: object) -> tuple[CancelSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise read.fail("cancel", f"must be a list of {{event, if?, timeout?}} (got {raw!r})")
    specs: list[CancelSpec] = []
    for index, item in enumerate(raw):
        field = f"cancel[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("event"), str) or not item["event"]:
            raise read.fail(field, f"needs a non-empty string 'event' (got {item!r})")
        if_exp = read.expression(item.get("if"), f"{field}.if")
        until_ms = _iso_time_ms(item.get("timeout"))
        timeout_ms = None
        if until_ms is None:
            timeout_ms = read.optional_duration(item.get("timeout"), f"{field}.timeout", maximum=MAX_CANCEL_TIMEOUT_MS)
        specs.append(CancelSpec(item["event"], if_exp, timeout_ms, until_ms))
    return tuple(specs)


def _iso_time_ms(value: object) -> int | None:
    """Epoch milliseconds of an ISO-8601 time with a zone (``"2026-01-01T00:00:00Z"``), else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)
