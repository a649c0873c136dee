"""Claim-time flow control options of a function, read from its wire configuration.

``concurrency``, ``throttle`` and ``priority`` arrive in the shape the Inngest protocol syncs
(``inngest-wire.md`` section 3.4), whichever SDK defined the function. They are parsed and
validated once, when a function is registered (embedded engine start, or a sync), so a bad
value is refused with a message naming the option instead of surfacing at the first run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stepline import errors
from stepline.protocol import durations, expressions

MAX_CONCURRENCY_CONSTRAINTS = 2
SCOPES = ("fn", "env", "account")
MIN_THROTTLE_PERIOD_MS = 1_000
MAX_THROTTLE_PERIOD_MS = 7 * 86_400_000
MAX_PRIORITY_S = 600


@dataclasses.dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most ``limit`` calls of the function in flight at once, per value of ``key`` if given."""

    limit: int
    key: str | None = None
    """CEL over ``event``; None for one limit across the whole scope."""
    scope: str = "fn"
    """``fn``: counted per function; ``env``/``account``: shared by every function using the same
    key expression (Stepline has one environment, so the two mean the same)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottleConfig:
    """At most ``limit`` run starts per ``period_ms``, ``burst`` of them at once, per ``key``."""

    limit: int
    period_ms: int
    burst: int = 1
    key: str | None = None

    @property
    def interval_ms(self) -> int:
        """The spacing of starts once the burst is used up (GCRA's emission interval)."""
        return max(1, self.period_ms // self.limit)


@dataclasses.dataclass(frozen=True, slots=True)
class FlowConfig:
    concurrency: tuple[ConcurrencyLimit, ...] = ()
    throttle: ThrottleConfig | None = None
    priority: str | None = None
    """CEL over ``event`` giving seconds of head start (negative: a delay), -600..600."""

    @property
    def active(self) -> bool:
        return bool(self.concurrency) or self.throttle is not None or self.priority is not None


NONE = FlowConfig()


def parse(config: dict[str, Any], fn_id: str) -> FlowConfig:
    """The claim-time options of one function's configuration; ``ConfigurationError`` names the bad one."""
    concurrency = _concurrency(config.get("concurrency"), fn_id)
    throttle = _throttle(config.get("throttle"), fn_id)
    priority = _priority(config.get("priority"), fn_id)
    if not concurrency and throttle is None and priority is None:
        return NONE
    return FlowConfig(concurrency=concurrency, throttle=throttle, priority=priority)


def _concurrency(raw: Any, fn_id: str) -> tuple[ConcurrencyLimit, ...]:
    if raw is None or raw == []:
        return ()
    entries: list[Any]
    if isinstance(raw, dict) and ("fn" in raw or "step" in raw) and "limit" not in raw:
        # Go's {fn: [...], step: [...]} form: both lists limit calls of this function.
        entries = [*(raw.get("fn") or []), *(raw.get("step") or [])]
    elif isinstance(raw, list):
        entries = raw
    else:
        entries = [raw]
    if len(entries) > MAX_CONCURRENCY_CONSTRAINTS:
        raise errors.ConfigurationError(
            f"function {fn_id!r}: concurrency has {len(entries)} constraints; "
            f"at most {MAX_CONCURRENCY_CONSTRAINTS} are allowed"
        )
    limits = tuple(_concurrency_entry(entry, fn_id) for entry in entries)
    return tuple(limit for limit in limits if limit is not None)


def _concurrency_entry(entry: Any, fn_id: str) -> ConcurrencyLimit | None:
    if isinstance(entry, int) and not isinstance(entry, bool):
        entry = {"limit": entry}
    if not isinstance(entry, dict):
        raise errors.ConfigurationError(
            f"function {fn_id!r}: concurrency must be a number or an object with 'limit' (got {entry!r})"
        )
    limit = entry.get("limit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise errors.ConfigurationError(
            f"function {fn_id!r}: concurrency limit must be a positive integer (got {limit!r})"
        )
    scope = entry.get("scope") or "fn"
    if scope not in SCOPES:
        raise errors.ConfigurationError(
            f"function {fn_id!r}: concurrency scope must be one of {', '.join(SCOPES)} (got {scope!r})"
        )
    key = _expression(entry.get("key"), fn_id, "concurrency key")
    return ConcurrencyLimit(limit=limit, key=key, scope=str(scope))


def _throttle(raw: Any, fn_id: str) -> ThrottleConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise errors.ConfigurationError(f"function {fn_id!r}: throttle must be an object with 'limit' and 'period'")
    limit = raw.get("limit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise errors.ConfigurationError(
            f"function {fn_id!r}: throttle limit must be a positive integer (got {limit!r})"
        )
    period = raw.get("period")
    try:
        period_ms = durations.parse_duration_ms(str(period)) if isinstance(period, str) else -1
    except errors.ConfigurationError as exc:
        raise errors.ConfigurationError(f"function {fn_id!r}: throttle period: {exc}") from None
    if not MIN_THROTTLE_PERIOD_MS <= period_ms <= MAX_THROTTLE_PERIOD_MS:
        raise errors.ConfigurationError(
            f"function {fn_id!r}: throttle period must be a time string from 1s to 7d (got {period!r})"
        )
    burst = raw.get("burst", 1)
    if burst is None or burst == 0:
        burst = 1  # SDKs send 0 or nothing for "no burst"
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise errors.ConfigurationError(
            f"function {fn_id!r}: throttle burst must be a positive integer (got {burst!r})"
        )
    key = _expression(raw.get("key"), fn_id, "throttle key")
    return ThrottleConfig(limit=limit, period_ms=period_ms, burst=burst, key=key)


def _priority(raw: Any, fn_id: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise errors.ConfigurationError(f"function {fn_id!r}: priority must be an object with 'run'")
    run = _expression(raw.get("run"), fn_id, "priority run")
    if run is None:
        return None
    # A constant expression is checked now: a priority that can never be valid is a definition error.
    try:
        value = expressions.evaluate(run, {})
    except errors.ExpressionError:
        return run  # depends on the event: checked (and clamped) at run creation
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not -MAX_PRIORITY_S <= value <= MAX_PRIORITY_S
    ):
        raise errors.ConfigurationError(
            f"function {fn_id!r}: priority run must be between -{MAX_PRIORITY_S} and {MAX_PRIORITY_S} seconds "
            f"(got {value})"
        )
    return run


def _expression(raw: Any, fn_id: str, option: str) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise errors.ConfigurationError(f"function {fn_id!r}: {option} must be a CEL expression string (got {raw!r})")
    try:
        expressions.compile_expression(raw)
    except errors.ExpressionError as exc:
        raise errors.ExpressionError(f"function {fn_id!r}: {option}: {exc}") from None
    return raw
