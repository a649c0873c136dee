"""Loading a backend's named SQL queries from its ``queries.sql``.

The file is a sequence of blocks, each introduced by a ``-- name: <query_name>`` line.
Both backends define the same names (a test checks it), so the verbs line up.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

from stepline import errors

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def load_queries(backend: str) -> dict[str, LiteralString]:
    """Named queries of ``backend`` (``sqlite`` or ``postgres``)."""
    text = resources.files(f"stepline.storage.{backend}").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise errors.StorageError(f"{backend}/queries.sql defines {name!r} twice")
        # The file ships with the package and is never built from input, so it is literal SQL.
        queries[name] = cast(LiteralString, body.strip().rstrip(";"))
    return queries
