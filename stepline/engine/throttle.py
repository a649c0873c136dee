"""Throttle: when a new run may start, so that starts keep to ``limit`` per ``period``.

GCRA (the generic cell rate algorithm) with delay instead of refusal: each key keeps one
number in the database, its *theoretical arrival time* (TAT). A start spends one interval
``T = period / limit``; up to ``burst`` starts may happen at once (a tolerance of
``(burst - 1) * T``). A start arriving at ``now`` moves the TAT to ``max(TAT, now) + T`` and may
begin at ``max(now, TAT_new - T - tolerance)``. Nothing is dropped: runs beyond the rate get a
later start time, in arrival order. The TAT is updated by one upsert under the key's row lock,
so every server sharing the database agrees.
"""

from __future__ import annotations

from typing import Any

from stepline.engine import flow_config, flow_keys
from stepline.storage import store


def key_for(function_id: str, throttle: flow_config.ThrottleConfig, event: dict[str, Any]) -> str:
    """The throttle key of a run: per function, and per value of ``throttle.key`` if given."""
    if throttle.key is None:
        return function_id
    return f"{function_id}\x1f{flow_keys.evaluate(throttle.key, event)}"


def start_time(tat_new: int, now: int, throttle: flow_config.ThrottleConfig) -> int:
    """When the run whose start moved the key's TAT to ``tat_new`` may begin."""
    interval = throttle.interval_ms
    tolerance = (throttle.burst - 1) * interval
    return max(now, tat_new - interval - tolerance)


async def start_at(
    tx: store.Transaction, function_id: str, throttle: flow_config.ThrottleConfig, event: dict[str, Any], now: int
) -> int:
    """Count one start against the run's throttle key; returns when the run may start."""
    key = key_for(function_id, throttle, event)
    tat = await tx.advance_throttle(key, now, throttle.interval_ms)
    return start_time(tat, now, throttle)
