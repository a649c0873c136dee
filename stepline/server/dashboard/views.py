"""View models: records turned into what the templates show (rows, a run's waterfall).

Templates only lay these out; every decision (what a step's bar spans, which actions a run
offers, what a pending sleep or wait is waiting for) is made here, where it is tested.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from stepline.storage import records

ERROR_KINDS = frozenset({"error"})


@dataclasses.dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    function_id: str
    status: str
    event_id: str
    event_name: str
    created_at: int
    duration: int | None
    step_count: int
    error: str


def run_row(run: records.RunRecord, now: int) -> RunRow:
    first = run.events[0] if run.events and isinstance(run.events[0], dict) else {}
    error = ""
    if isinstance(run.error, dict):
        error = f"{run.error.get('name') or 'Error'}: {run.error.get('message') or ''}"
    duration = None
    if run.started_at is not None:
        duration = (run.ended_at or now) - run.started_at
    return RunRow(
        id=run.id,
        function_id=run.function_id,
        status=run.status.value,
        event_id=run.event_id,
        event_name=str(first.get("name", "")),
        created_at=run.created_at,
        duration=duration,
        step_count=run.step_count,
        error=error,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    """One row of the waterfall: a recorded step, or something the run is waiting on."""

    name: str
    kind: str
    state: str
    """``ok``, ``error`` (a recorded step) or ``pending``."""
    started_at: int
    ended_at: int | None
    attempts: int
    target: str
    """What a sleep, wait or invoke waits for; what a planned step or retry waits for."""
    target_at: int | None = None
    """The time ``target`` refers to: when a sleep ends, a wait times out, an attempt is due."""
    output: Any = None
    error: dict[str, Any] | None = None
    has_output: bool = False
    x: float = 0.0
    """Left edge, percent of the run's span."""
    width: float = 0.0

    @property
    def duration(self) -> int | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclasses.dataclass(frozen=True, slots=True)
class RunDetail:
    run: records.RunRecord
    row: RunRow
    event: dict[str, Any]
    bars: list[Bar]
    span_start: int
    span_end: int
    parent_run_id: str | None
    can_cancel: bool
    can_retry: bool

    @property
    def live(self) -> bool:
        return not self.run.status.is_terminal


def run_detail(
    run: records.RunRecord,
    steps: Sequence[records.StepRecord],
    pauses: Sequence[records.PauseRecord],
    items: Sequence[records.QueueItem],
    now: int,
) -> RunDetail:
    bars = [_step_bar(step, run.created_at) for step in steps]
    names = {step.step_id: step.name for step in steps}
    names.update({pause.step_id: pause.step_name or pause.step_id for pause in pauses})
    bars += [_pause_bar(pause) for pause in pauses]
    bars += [bar for item in items if (bar := _item_bar(item, names, now)) is not None]
    start = run.created_at
    end = max([run.ended_at or now, *(bar.ended_at or now for bar in bars), start + 1])
    span = end - start
    placed = [
        dataclasses.replace(
            bar,
            x=round(100 * max(0, bar.started_at - start) / span, 2),
            width=round(max(0.4, 100 * ((bar.ended_at or now) - max(bar.started_at, start)) / span), 2),
        )
        for bar in bars
    ]
    parent = run.correlation_id.split(".", 1)[0] if run.correlation_id else None
    return RunDetail(
        run=run,
        row=run_row(run, now),
        event=run.events[0] if run.events and isinstance(run.events[0], dict) else {},
        bars=placed,
        span_start=start,
        span_end=end,
        parent_run_id=parent,
        can_cancel=not run.status.is_terminal,
        can_retry=run.status is records.RunStatus.FAILED,
    )


def _step_bar(step: records.StepRecord, run_created_at: int) -> Bar:
    result = step.result
    is_error = isinstance(result, dict) and set(result) == ERROR_KINDS
    output: Any = result
    if isinstance(result, dict) and set(result) <= {"data"}:
        output = result.get("data")
    target = ""
    if step.kind == "wait":
        target = "no matching event before the timeout" if result in (None, {"data": None}) else "event received"
    elif step.kind == "sleep":
        target = "slept until its time"
    if step.ended_at < run_created_at:  # recorded before this run existed: copied by a retry
        target = "result kept from the failed run this one retries (not run again)"
    return Bar(
        name=step.name,
        kind=step.kind,
        state="error" if is_error else "ok",
        started_at=step.started_at,
        ended_at=step.ended_at,
        attempts=step.attempts,
        target=target,
        output=None if is_error else output,
        error=result["error"] if is_error and isinstance(result["error"], dict) else None,
        has_output=not is_error and output is not None,
    )


def _pause_bar(pause: records.PauseRecord) -> Bar:
    if pause.kind is records.PauseKind.WAIT:
        target = f"waiting for event {pause.event_name}"
        if pause.expression:
            target += f" if {pause.expression}"
    else:
        target = "waiting for the invoked function's run to finish"
    return Bar(
        name=pause.step_name or pause.step_id,
        kind=pause.kind.value,
        state="pending",
        started_at=pause.created_at,
        ended_at=pause.expires_at,
        attempts=0,
        target=f"{target}; times out at",
        target_at=pause.expires_at,
    )


def _item_bar(item: records.QueueItem, names: dict[str, str], now: int) -> Bar | None:
    kind = item.kind
    if kind is records.ItemKind.PAUSE_TIMEOUT:
        return None  # shown by its pause
    step = str(item.payload.get("name") or names.get(item.step_id or "", item.step_id or ""))
    if kind is records.ItemKind.WAKE:
        return Bar(step, "sleep", "pending", item.created_at, item.available_at, 0, "sleeping until", item.available_at)
    at: int | None = None
    if item.available_at > now and item.claims > 0:
        what = "running now (leased until)"
        at = item.available_at
    elif item.available_at > now:
        what = f"attempt {item.attempt + 1} due at" if item.attempt else "due at"
        at = item.available_at
    else:
        what = "ready, waiting for a worker"
    kind_name = "step" if kind is records.ItemKind.STEP else "call"
    return Bar(step or "next call", kind_name, "pending", item.created_at, None, item.attempt, what, at)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcomes:
    counts: dict[str, int]
    total: int


def outcomes(runs: Sequence[records.RunRecord]) -> Outcomes:
    counted = Counter(run.status.value for run in runs)
    return Outcomes({status.value: counted.get(status.value, 0) for status in records.RunStatus}, len(runs))


def triggers(config: dict[str, Any]) -> list[str]:
    """A function's triggers as one line each: ``event NAME [if EXPR]`` or ``cron SCHEDULE``."""
    found: list[str] = []
    for trigger in config.get("triggers") or []:
        if not isinstance(trigger, dict):
            continue
        if trigger.get("event"):
            line = f"event {trigger['event']}"
            if trigger.get("expression"):
                line += f" if {trigger['expression']}"
            found.append(line)
        elif trigger.get("cron"):
            found.append(f"cron {trigger['cron']}")
    return found


def retries(config: dict[str, Any]) -> str:
    steps = config.get("steps")
    if isinstance(steps, dict):
        for step in steps.values():
            if isinstance(step, dict) and isinstance(step.get("retries"), dict):
                return str(step["retries"].get("attempts", "default"))
    return "default"


FLOW_KEYS = (
    "concurrency",
    "throttle",
    "rateLimit",
    "debounce",
    "batchEvents",
    "priority",
    "cancel",
    "idempotency",
    "timeouts",
    "singleton",
)


def flow_control(config: dict[str, Any]) -> dict[str, Any]:
    return {key: config[key] for key in FLOW_KEYS if config.get(key) not in (None, [], {})}
