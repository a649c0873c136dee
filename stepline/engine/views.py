"""What the engine returns to users: runs, their steps, and send results."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from stepline.storage import records


@dataclasses.dataclass(frozen=True, slots=True)
class SendResult:
    event_ids: list[str]
    """Ids of the accepted events, in the order sent."""
    run_ids: list[str]
    """Runs the events started."""


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    id: str
    """Hashed step id."""
    name: str
    kind: str
    output: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: int
    ended_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    id: str
    function_id: str
    status: records.RunStatus
    output: Any
    error: dict[str, Any] | None
    event: dict[str, Any]
    steps: list[Step]
    created_at: int
    started_at: int | None
    ended_at: int | None
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Every triggering event: one, or the whole batch of a ``batch_events`` function."""

    @classmethod
    def from_records(cls, run: records.RunRecord, steps: Sequence[records.StepRecord]) -> Run:
        return cls(
            id=run.id,
            function_id=run.function_id,
            status=run.status,
            output=run.output,
            error=run.error,
            event=run.events[0] if run.events else {},
            steps=[_step_view(step) for step in steps],
            created_at=run.created_at,
            started_at=run.started_at,
            ended_at=run.ended_at,
            events=run.events,
        )


def _step_view(step: records.StepRecord) -> Step:
    result = step.result
    error = result.get("error") if isinstance(result, dict) and set(result) == {"error"} else None
    output = result.get("data") if isinstance(result, dict) and set(result) <= {"data"} else result
    return Step(
        step.step_id,
        step.name,
        step.kind,
        None if error else output,
        error,
        step.attempts,
        step.started_at,
        step.ended_at,
    )
