"""Opcodes an SDK returns in a ``206`` response."""

from __future__ import annotations

import enum


class Opcode(enum.StrEnum):
    STEP_RUN = "StepRun"
    STEP = "Step"  # legacy twin of StepRun
    STEP_ERROR = "StepError"
    STEP_FAILED = "StepFailed"
    STEP_PLANNED = "StepPlanned"
    SLEEP = "Sleep"
    WAIT_FOR_EVENT = "WaitForEvent"
    INVOKE_FUNCTION = "InvokeFunction"
    RUN_COMPLETE = "RunComplete"
    STEP_NOT_FOUND = "StepNotFound"


COMPLETED_STEP_OPS = frozenset({Opcode.STEP_RUN, Opcode.STEP})
"""Ops that carry a finished step's data."""
