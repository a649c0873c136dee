"""Pydantic models of execution requests and opcodes: the boundary both transports share."""

from __future__ import annotations

from typing import Any

import pydantic

from stepline.protocol import opcodes

_CONFIG = pydantic.ConfigDict(extra="ignore", populate_by_name=True)


class Stack(pydantic.BaseModel):
    model_config = _CONFIG
    current: int = 0
    stack: list[str] | None = None


class RequestContext(pydantic.BaseModel):
    model_config = _CONFIG
    run_id: str
    attempt: int = 0
    max_attempts: int | None = None
    disable_immediate_execution: bool = False
    stack: Stack = pydantic.Field(default_factory=Stack)
    step_id: str = "step"
    use_api: bool = False
    env: str = ""
    task_id: str | None = None
    """Stepline extension: the tracked task this run drives (other SDKs ignore it)."""


class ExecutionRequest(pydantic.BaseModel):
    """What the server sends with ``POST <serve url>?fnId=...&stepId=...``."""

    model_config = _CONFIG
    ctx: RequestContext
    event: dict[str, Any]
    events: list[dict[str, Any]]
    steps: dict[str, Any]
    use_api: bool = False
    version: int = -1

    @property
    def target_step(self) -> str | None:
        """The hashed step id a targeted call must run, or None for a discovery call."""
        step_id = self.ctx.step_id
        return None if step_id in ("", "step") else step_id


class Op(pydantic.BaseModel):
    """One item of a ``206`` response body."""

    model_config = _CONFIG
    op: opcodes.Opcode
    id: str
    name: str | None = None
    display_name: str | None = pydantic.Field(default=None, alias="displayName")
    opts: dict[str, Any] | None = None
    data: Any = None
    error: dict[str, Any] | None = None
    userland: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"op": self.op.value, "id": self.id}
        if self.name is not None:
            wire["name"] = self.name
        if self.display_name is not None:
            wire["displayName"] = self.display_name
        wire["opts"] = self.opts
        if self.op in opcodes.COMPLETED_STEP_OPS or self.op is opcodes.Opcode.RUN_COMPLETE:
            wire["data"] = self.data
        if self.error is not None:
            wire["error"] = self.error
        if self.userland is not None:
            wire["userland"] = self.userland
        return wire

    @property
    def label(self) -> str:
        """The user's name for the step, for display and error messages."""
        return self.display_name or self.name or self.id


def error_body(name: str, message: str, stack: str | None = None) -> dict[str, Any]:
    """An error as the protocol serialises it."""
    body: dict[str, Any] = {"name": name, "message": message}
    if stack:
        body["stack"] = stack
    return body
