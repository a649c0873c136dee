"""Flow-control keys and priorities evaluated from a run's triggering event (CEL).

Keys are stringified as the Inngest protocol does (strings as they are, other values as
compact JSON). An expression that fails on an event (a missing field) yields the empty key,
as Inngest's lenient evaluation treats unknowns as null: such runs share one key rather than
being refused, since the event was already accepted.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stepline import errors
from stepline.engine import flow_config
from stepline.protocol import expressions
from stepline.storage import records

MAX_KEY_CHARS = 200
"""Longer key values are stored as their sha256, keeping the queue's indexes small."""


def evaluate(expression: str, event: dict[str, Any]) -> str:
    try:
        value = expressions.evaluate(expression, {"event": event})
    except errors.ExpressionError:
        return ""
    text = value if isinstance(value, str) else json.dumps(_plain(value), separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_KEY_CHARS:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def _plain(value: Any) -> Any:
    """CEL values as JSON-encodable Python values (CEL maps and lists are dict and list subclasses)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def concurrency_key(function_id: str, limit: flow_config.ConcurrencyLimit, event: dict[str, Any]) -> str:
    """The slot key one constraint puts a run under.

    ``fn`` scope keys include the function id; ``env``/``account`` keys are shared by every
    function using the same key expression. The expression is part of the key, so two
    constraints with different expressions never share slots by accident."""
    owner = function_id if limit.scope == "fn" else limit.scope
    if limit.key is None:
        return owner
    return f"{owner}\x1f{limit.key}\x1f{evaluate(limit.key, event)}"


def run_concurrency(
    run_id: str, function_id: str, flow: flow_config.FlowConfig, event: dict[str, Any]
) -> records.RunConcurrency | None:
    if not flow.concurrency:
        return None
    keys = [(concurrency_key(function_id, limit, event), limit.limit) for limit in flow.concurrency]
    if len(keys) == 2 and keys[0][0] == keys[1][0]:
        keys = [(keys[0][0], min(keys[0][1], keys[1][1]))]  # one key twice: the tighter limit
    second = keys[1] if len(keys) > 1 else (None, None)
    return records.RunConcurrency(run_id, keys[0][0], keys[0][1], second[0], second[1])


def priority_ms(expression: str, event: dict[str, Any]) -> int:
    """Milliseconds of head start (negative: delay), clamped to -600..600 s; 0 when the
    expression does not give a number."""
    try:
        value = expressions.evaluate(expression, {"event": event})
    except errors.ExpressionError:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    seconds = max(-flow_config.MAX_PRIORITY_S, min(flow_config.MAX_PRIORITY_S, float(value)))
    return round(seconds * 1000)
