"""CEL expressions of the protocol: trigger filters, wait matches, keys.

Compiled once (cached by source) and evaluated per event. Variables are ``event`` (the
run's triggering event), ``async`` (the incoming candidate event, for waits) and ``vars``.
Besides standard CEL, Inngest's helpers ``lowercase``, ``uppercase`` and ``json_parse``
are available. A missing attribute makes a match false instead of raising, as in Inngest.
"""

from __future__ import annotations

import functools
import importlib
import json
from types import ModuleType
from typing import Any

from stepline import errors

_FUNCTIONS: dict[str, Any] = {
    "lowercase": lambda value: str(value).lower(),
    "uppercase": lambda value: str(value).upper(),
    "json_parse": lambda value: json.loads(str(value)),
}


@functools.cache
def _cel() -> ModuleType:
    """The CEL library, imported on first use: its package also loads an interactive CLI
    (prompt_toolkit) costing ~0.7 s, which apps without expressions should not pay."""
    return importlib.import_module("cel")


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Any:
    """A compiled program; raises ``ExpressionError`` quoting the expression and the parser's reason."""
    if not source.strip():
        raise errors.ExpressionError("expression is empty")
    try:
        return _cel().compile(source)
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise errors.ExpressionError(f"expression {source!r} does not compile: {reason}") from None


def evaluate(source: str, variables: dict[str, Any]) -> Any:
    """The value of ``source``; raises ``ExpressionError`` when evaluation fails."""
    program = compile_expression(source)
    try:
        # Building the context converts the variables, and fails on values CEL cannot hold.
        context = _cel().Context(variables, _FUNCTIONS)
        return program.execute(context)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise errors.ExpressionError(f"expression {source!r} failed: {exc}") from None


def matches(source: str, variables: dict[str, Any]) -> bool:
    """True only when ``source`` evaluates to ``true``; a missing attribute or error is no match."""
    try:
        return evaluate(source, variables) is True
    except errors.ExpressionError:
        return False
