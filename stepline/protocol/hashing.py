"""Step ids as the protocol hashes them: sha1 of the user id, ``id:n`` for the n-th repeat."""

from __future__ import annotations

import hashlib


def hash_step_id(step_id: str) -> str:
    """Lowercase hex SHA-1 of the UTF-8 step id (``"a"`` -> ``86f7e437...``)."""
    return hashlib.sha1(step_id.encode("utf-8")).hexdigest()


def indexed_step_id(step_id: str, previous_uses: int) -> str:
    """The id of the ``previous_uses + 1``-th use of ``step_id`` in one run: ``a``, ``a:1``, ``a:2``..."""
    return step_id if previous_uses == 0 else f"{step_id}:{previous_uses}"
