"""Helpers shared by the engine behaviour tests: start a run, read it back, name its steps."""

from __future__ import annotations

from typing import Any

import stepline
from stepline.engine.engine import Run, Step
from stepline.testing import TestEngine


async def start(engine: TestEngine, name: str, data: dict[str, Any] | None = None) -> str:
    """Send one event that starts exactly one run; return the run's id."""
    result = await engine.send(stepline.Event(name, data or {}))
    assert len(result.run_ids) == 1, f"expected one run for {name!r}, got {result.run_ids}"
    return result.run_ids[0]


async def get_run(engine: TestEngine, run_id: str) -> Run:
    run = await engine.get_run(run_id)
    assert run is not None, f"run {run_id} not found"
    return run


def step_names(run: Run) -> list[str]:
    return [step.name for step in run.steps]


def step_named(run: Run, name: str) -> Step:
    found = [step for step in run.steps if step.name == name]
    assert len(found) == 1, f"expected one step named {name!r} in {step_names(run)}"
    return found[0]
