"""Time as the engine sees it: real, or fake for deterministic tests."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Epoch milliseconds."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that only moves when told to. Starts at the real time unless given ``start_ms``."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = start_ms if start_ms is not None else SystemClock().now_ms()

    def now_ms(self) -> int:
        return self._now

    def set_ms(self, value: int) -> None:
        self._now = max(self._now, value)

    def advance(self, delta: timedelta) -> None:
        self._now += round(delta.total_seconds() * 1000)
