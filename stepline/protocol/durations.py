"""Time strings of the protocol (``"10s"``, ``"1h30m"``, ``"500ms"``, ``"1d"``, ``"1w"``)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from stepline import errors

_UNITS_MS: dict[str, float] = {
    "ns": 1e-6,
    "us": 1e-3,
    "µs": 1e-3,
    "ms": 1.0,
    "s": 1_000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
    "w": 604_800_000.0,
}
MAX_DURATION_MS = 100 * 365 * 86_400_000
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_FORMAT_UNITS: tuple[tuple[str, int], ...] = (
    ("w", 604_800_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
)


def parse_duration_ms(text: str, *, at_most_ms: int | None = None) -> int:
    """Milliseconds in a time string; raises ``ConfigurationError`` naming the bad text.

    With ``at_most_ms``, a longer duration (however long) is that long instead of an error."""
    stripped = text.strip()
    position = 0
    total = 0.0
    for match in _PART.finditer(stripped):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS_MS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(stripped):
        raise errors.ConfigurationError(
            f"invalid duration {text!r}: expected a time string such as '30s', '5m', '1h30m' or '2d'"
        )
    if at_most_ms is not None and total > at_most_ms:
        return at_most_ms
    return _bounded(total, text)


def _bounded(milliseconds: float, shown: object) -> int:
    """``milliseconds`` rounded, if finite and at most ``MAX_DURATION_MS`` long either way: past
    that a duration is a mistake, and would overflow dates and 64-bit columns downstream."""
    if not math.isfinite(milliseconds) or abs(milliseconds) > MAX_DURATION_MS:
        raise errors.ConfigurationError(f"duration {shown!r} is out of range: the longest is 100 years")
    return round(milliseconds)


def format_duration_ms(milliseconds: int) -> str:
    """A compact time string for a non-negative number of milliseconds (``90_000`` -> ``"1m30s"``)."""
    if milliseconds < 0:
        raise errors.ConfigurationError(f"a duration cannot be negative (got {milliseconds} ms)")
    if milliseconds == 0:
        return "0s"
    parts: list[str] = []
    rest = milliseconds
    for unit, size in _FORMAT_UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def to_milliseconds(value: timedelta | int | float | str) -> int:
    """Milliseconds in a ``timedelta``, a number of seconds, or a time string."""
    if isinstance(value, timedelta):
        return _bounded(value.total_seconds() * 1000, value)
    if isinstance(value, str):
        return parse_duration_ms(value)
    if isinstance(value, bool):
        raise errors.ConfigurationError("a duration must be a timedelta, seconds or a time string, not a bool")
    return _bounded(value * 1000, value)
