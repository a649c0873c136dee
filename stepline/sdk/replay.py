"""The pure replay state of one call: every decision the step tools make, with no I/O.

On each call the function runs from the top. A step whose hashed id is in the memo returns
its recorded result; the first new step either runs (and its result becomes an op, or a
checkpoint), or is planned for the server to run separately (inside ``parallel`` or when
the server disabled immediate execution); sleeps, waits and invokes become ops. A call that
targets one step (``stepId=<hash>``) runs only that step and skips every other new one.
The async and sync step tools are thin shells over this class.
"""

from __future__ import annotations

import dataclasses
import enum
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from stepline import errors
from stepline.protocol import hashing, jsonvalue, models, opcodes
from stepline.protocol.durations import to_milliseconds


class StepInterrupt(BaseException):
    """Ends the call with ops for the server. A BaseException so user ``except Exception`` can't swallow it."""

    def __init__(self, ops: list[models.Op], *, retry_after: str | None = None) -> None:
        super().__init__(f"{len(ops)} op(s)")
        self.ops = ops
        self.retry_after = retry_after


class SkipInterrupt(BaseException):
    """In a targeted call: this branch reached a new step that is not the target."""


_MISSING = object()


class Decision(enum.Enum):
    EXECUTE = "execute"
    PLAN = "plan"
    SKIP = "skip"


@dataclasses.dataclass(frozen=True, slots=True)
class StepIdentity:
    user_id: str
    """As the user wrote it."""
    indexed_id: str
    """With ``:n`` for the n-th repeat."""
    hashed: str
    index: int | None

    def userland(self) -> dict[str, Any]:
        return {"id": self.user_id, "index": self.index}


class ReplayState:
    def __init__(self, request: models.ExecutionRequest, *, checkpointing: bool) -> None:
        self.memo: dict[str, Any] = dict(request.steps)
        self.target = request.target_step
        self.disable_immediate = request.ctx.disable_immediate_execution
        self.attempt = request.ctx.attempt
        self.max_attempts = request.ctx.max_attempts or 1
        self.checkpointing = checkpointing
        self.run_id = request.ctx.run_id
        self.parallel_depth = 0
        self._uses: dict[str, int] = {}
        self._consumed: set[str] = set()

    @property
    def replaying(self) -> bool:
        """Whether recorded steps remain to be replayed before the function reaches new code."""
        return len(self._consumed) < len(self.memo)

    # identity and memo
    def identify(self, user_id: str) -> StepIdentity:
        if not isinstance(user_id, str) or not user_id:
            raise errors.ConfigurationError(f"a step id must be a non-empty string (got {user_id!r})")
        uses = self._uses.get(user_id, 0)
        self._uses[user_id] = uses + 1
        indexed = hashing.indexed_step_id(user_id, uses)
        return StepIdentity(user_id, indexed, hashing.hash_step_id(indexed), uses or None)

    def recall(self, step: StepIdentity) -> Any:
        """The memo value of ``step``, or ``_MISSING``."""
        if step.hashed not in self.memo:
            return _MISSING
        self._consumed.add(step.hashed)
        return self.memo[step.hashed]

    @staticmethod
    def is_missing(value: Any) -> bool:
        return value is _MISSING

    @staticmethod
    def unwrap(step: StepIdentity, memo: Any) -> Any:
        """The data of a ``{"data": x}`` memo; raises ``StepError`` for ``{"error": e}``."""
        if isinstance(memo, dict):
            if set(memo) == {"error"}:
                raise errors.StepError.from_wire(memo["error"] or {}, step_id=step.user_id)
            if set(memo) <= {"data"}:
                return memo.get("data")
        return memo

    def remember(self, step: StepIdentity, data: Any) -> None:
        """A checkpointed step: later calls of the same id in this call see its result."""
        self.memo[step.hashed] = {"data": data}
        self._consumed.add(step.hashed)
        # The next new step starts its own attempts, as it would in a fresh call.
        self.attempt = 0

    # decisions
    def decide_run(self, step: StepIdentity) -> Decision:
        if self.target is not None:
            return Decision.EXECUTE if step.hashed == self.target else Decision.SKIP
        if self.parallel_depth > 0 or self.disable_immediate:
            return Decision.PLAN
        self.check_all_memo_reached(step)
        return Decision.EXECUTE

    def check_all_memo_reached(self, new_step: StepIdentity | None) -> None:
        """Every recorded step must be replayed before a new one (or the end) is reached.

        A recorded step that is never reached means the function's steps changed between
        calls (code outside steps must be deterministic).
        """
        if self.target is not None or self.parallel_depth > 0:
            return
        unreached = [key for key in self.memo if key not in self._consumed]
        if unreached:
            where = f"new step {new_step.user_id!r}" if new_step else "the end of the function"
            raise errors.NonDeterminismError(
                f"the function reached {where} without replaying {len(unreached)} recorded step(s) "
                f"({', '.join(sorted(unreached)[:3])}...): its steps changed between calls; "
                "code outside steps must be deterministic"
            )

    # ops
    def planned_op(self, step: StepIdentity) -> models.Op:
        return models.Op(
            op=opcodes.Opcode.STEP_PLANNED,
            id=step.hashed,
            name=step.user_id,
            displayName=step.user_id,
            opts={"type": "step.run"},
            userland=step.userland(),
        )

    def result_op(self, step: StepIdentity, output: Any) -> models.Op:
        """A ``StepRun`` op; a non-JSON output becomes a ``StepFailed`` op instead."""
        try:
            jsonvalue.check_json(output, f"the value returned by step {step.user_id!r}")
        except errors.SerializationError as problem:
            return self._error_op(step, problem, final=True)
        return models.Op(
            op=opcodes.Opcode.STEP_RUN,
            id=step.hashed,
            name=step.user_id,
            displayName=step.user_id,
            data=output,
            userland=step.userland(),
        )

    def error_interrupt(self, step: StepIdentity, exc: BaseException) -> StepInterrupt:
        """The op for a step that raised: retried by the server unless final."""
        final = isinstance(exc, errors.NonRetriableError) or self.attempt + 1 >= self.max_attempts
        retry_after = None
        if isinstance(exc, errors.RetryAfterError):
            retry_after = format_retry_after(exc.retry_after)
        return StepInterrupt([self._error_op(step, exc, final=final)], retry_after=retry_after)

    def _error_op(self, step: StepIdentity, exc: BaseException, *, final: bool) -> models.Op:
        return models.Op(
            op=opcodes.Opcode.STEP_FAILED if final else opcodes.Opcode.STEP_ERROR,
            id=step.hashed,
            name=step.user_id,
            displayName=step.user_id,
            error=error_to_wire(exc),
            userland=step.userland(),
        )

    def sleep_op(self, step: StepIdentity, *, duration: timedelta | None, until: datetime | None) -> models.Op:
        if until is not None:
            target = until if until.tzinfo else until.replace(tzinfo=UTC)
            name = target.astimezone(UTC).isoformat().replace("+00:00", "Z")
            opts: dict[str, Any] | None = None
        else:
            assert duration is not None
            milliseconds = max(0, to_milliseconds(duration))
            name = f"{milliseconds}ms"
            opts = {"duration": name}
        return models.Op(
            op=opcodes.Opcode.SLEEP,
            id=step.hashed,
            name=name,
            displayName=step.user_id,
            opts=opts,
            userland=step.userland(),
        )

    def wait_op(self, step: StepIdentity, *, event: str, if_exp: str | None, timeout: timedelta | str) -> models.Op:
        opts: dict[str, Any] = {"event": event, "timeout": f"{to_milliseconds(timeout)}ms"}
        if if_exp:
            opts["if"] = if_exp
        return models.Op(
            op=opcodes.Opcode.WAIT_FOR_EVENT,
            id=step.hashed,
            name=event,
            displayName=step.user_id,
            opts=opts,
            userland=step.userland(),
        )

    def invoke_op(
        self, step: StepIdentity, *, function_id: str, data: dict[str, Any], timeout: timedelta | str | None
    ) -> models.Op:
        opts: dict[str, Any] = {"function_id": function_id, "payload": {"data": data}}
        if timeout is not None:
            opts["timeout"] = f"{to_milliseconds(timeout)}ms"
        return models.Op(
            op=opcodes.Opcode.INVOKE_FUNCTION,
            id=step.hashed,
            name=step.user_id,
            displayName=step.user_id,
            opts=opts,
            userland=step.userland(),
        )

    def new_op_decision(self, step: StepIdentity) -> Decision:
        """For sleeps, waits and invokes: report the op (PLAN) or, in a targeted call, skip."""
        if self.target is not None:
            return Decision.SKIP
        if self.parallel_depth == 0:
            self.check_all_memo_reached(step)
        return Decision.PLAN


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, errors.StepError):
        return models.error_body(exc.name, exc.message, exc.stack)
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return models.error_body(type(exc).__name__, str(exc) or type(exc).__name__, stack[-8000:])


def format_retry_after(value: timedelta | float | datetime) -> str:
    """A ``Retry-After`` value: whole seconds, or an ISO date for an absolute time."""
    if isinstance(value, datetime):
        target = value if value.tzinfo else value.replace(tzinfo=UTC)
        return target.astimezone(UTC).isoformat().replace("+00:00", "Z")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return str(max(1, round(seconds)))
