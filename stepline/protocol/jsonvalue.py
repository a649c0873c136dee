"""Checking that a value can cross the wire and be stored on every backend.

Stricter than ``json.dumps``: NaN and Infinity are not JSON (and PostgreSQL rejects them),
PostgreSQL's JSONB cannot hold the NUL character, and no UTF-8 text can hold a lone surrogate.
Rejecting these at the boundary, with the culprit named, makes SQLite and PostgreSQL behave
the same and keeps an unstorable value from reaching the database at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from stepline import errors

# An escaped NUL in JSON text: ``\u0000`` preceded by an even number of backslashes (an odd
# number would make it the literal text "\u0000", which is fine).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that fails only with ``ValueError``: nesting too deep for the parser is
    bad input like any other, not a ``RecursionError`` escaping as a server error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def check_json(value: Any, what: str) -> None:
    """Raise ``SerializationError`` naming ``what`` unless ``value`` is storable JSON."""
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise errors.SerializationError(
            f"{what} is not JSON-serialisable ({type(value).__name__}): {exc}. "
            "Use dicts, lists, strings, finite numbers, booleans or None."
        ) from None
    except RecursionError:
        raise errors.SerializationError(f"{what} is nested too deeply") from None
    if "\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        raise errors.SerializationError(f"{what} cannot be stored: it contains a NUL character (U+0000)")
    try:
        encoded.encode()
    except UnicodeEncodeError:
        # JSON text may escape half of a surrogate pair ("\\ud800") that no UTF-8 can hold:
        # stored, it would break every later read of the row.
        raise errors.SerializationError(
            f"{what} cannot be stored: it contains an unpaired surrogate (a lone \\ud800-\\udfff)"
        ) from None
