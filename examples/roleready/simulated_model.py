"""A STAND-IN for a language model: no network, no model, just latency and failures you choose.

RoleReady's worker calls ``FakeModel.tailor`` where a real app would call a model API. It
sleeps, then fails or answers with a canned tailored résumé. Tune it with environment variables:

``ROLEREADY_MODEL_LATENCY_MS``
    How long one call takes, in milliseconds (default ``800``).
``ROLEREADY_MODEL_FAILURE_RATE``
    The probability, from 0 to 1, that a call fails with ``SimulatedModelError`` (default ``0.2``),
    as a busy model API answering 503 would.
``ROLEREADY_MODEL_SEED``
    Seed of the failure draws (unset: a different sequence each start), so that a failing
    schedule can be reproduced.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

LATENCY_MS_VARIABLE = "ROLEREADY_MODEL_LATENCY_MS"
FAILURE_RATE_VARIABLE = "ROLEREADY_MODEL_FAILURE_RATE"
SEED_VARIABLE = "ROLEREADY_MODEL_SEED"


class SimulatedModelError(RuntimeError):
    """What the stand-in raises instead of answering (a step retries it)."""


class FakeModel:
    """The stand-in model. ``latency_ms`` and ``failure_rate`` default to the environment."""

    def __init__(self, latency_ms: float | None = None, failure_rate: float | None = None, seed: int | None = None):
        self.latency_ms = latency_ms if latency_ms is not None else float(os.environ.get(LATENCY_MS_VARIABLE, "800"))
        rate = failure_rate if failure_rate is not None else float(os.environ.get(FAILURE_RATE_VARIABLE, "0.2"))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{FAILURE_RATE_VARIABLE} must be from 0 to 1 (got {rate})")
        self.failure_rate = rate
        raw_seed = os.environ.get(SEED_VARIABLE)
        self._rng = random.Random(seed if seed is not None else (int(raw_seed) if raw_seed else None))

    async def tailor(self, intel: dict[str, Any]) -> dict[str, Any]:
        """A 'tailored résumé' for the job described by ``intel`` (from the ``job-intel`` step)."""
        await asyncio.sleep(self.latency_ms / 1000)
        if self._rng.random() < self.failure_rate:
            raise SimulatedModelError("the simulated model is overloaded (HTTP 503); the step will retry")
        keywords = [word for word in intel.get("keywords", []) if isinstance(word, str)][:5]
        headline = f"{intel.get('title', 'Engineer')} candidate for {intel.get('company', 'your team')}"
        bullets = [f"Shipped production systems using {word}" for word in keywords] or ["Shipped production systems"]
        return {"headline": headline, "bullets": bullets, "model": "simulated"}
