"""Delay before retrying a failed step or call: exponential with jitter."""

from __future__ import annotations

import random

BASE_MS = 1_000
CAP_MS = 10 * 60_000


def retry_delay_ms(attempt: int, rng: random.Random | None = None) -> int:
    """Delay before attempt ``attempt + 1`` after attempt ``attempt`` (0-based) failed.

    The ceiling doubles per attempt from 1 s up to 10 min; the delay is drawn from
    [ceiling/2, ceiling] so that many runs failing together do not retry in lockstep.
    """
    ceiling = min(CAP_MS, BASE_MS * (2 ** max(0, attempt)))
    source = rng if rng is not None else random
    return int(ceiling / 2 + source.random() * ceiling / 2)
