"""Rows as the engine sees them: plain dataclasses, JSON already decoded.

Times are epoch milliseconds (``int``). Ids are ULID strings unless noted.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any, ClassVar

JSON = Any
"""A value that round-trips through ``json.dumps``/``json.loads``."""


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """Never executed: flow control (rate limit, singleton, debounce) decided so; ``error`` says why."""

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED)


class ItemKind(enum.StrEnum):
    """What claiming a queue item asks the executor to do."""

    DISCOVER = "discover"
    """Call the function with ``stepId=step``: replay and stop at the first new step."""
    STEP = "step"
    """Call the function targeting one planned step (``step_id``)."""
    WAKE = "wake"
    """A sleep (``step_id``) is over: record it and continue the run."""
    PAUSE_TIMEOUT = "pause_timeout"
    """A wait or invoke pause (``payload['pause_id']``) expired."""
    START_TIMEOUT = "start_timeout"
    """``timeouts.start`` passed: cancel the run if it has not started (``engine.flow_timers``)."""
    FINISH_TIMEOUT = "finish_timeout"
    """``timeouts.finish`` may have passed: cancel the run if it has not finished in time."""


class PauseKind(enum.StrEnum):
    WAIT = "wait"
    INVOKE = "invoke"
    CANCEL = "cancel"
    """A ``cancel_on`` listener: a matching event cancels the run (no timeout item; ``expires_at``
    is checked when an event arrives, and the pause goes when the run ends)."""


@dataclasses.dataclass(slots=True)
class EventRecord:
    internal_id: str
    """Stepline's own ULID for this stored event."""
    id: str
    """The event's public id: user-supplied, else ``internal_id``. Idempotency key of the runs it starts."""
    name: str
    data: dict[str, JSON]
    ts: int
    received_at: int
    user: dict[str, JSON] = dataclasses.field(default_factory=dict)
    v: str | None = None

    def to_wire(self) -> dict[str, JSON]:
        """The event as SDKs receive it in execution requests."""
        wire: dict[str, JSON] = {
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "ts": self.ts,
            "user": self.user,
        }
        if self.v is not None:
            wire["v"] = self.v
        return wire


@dataclasses.dataclass(slots=True)
class RunRecord:
    id: str
    function_id: str
    """Composite function id ``<app_id>-<fn_id>``."""
    event_id: str
    """``internal_id`` of the (first) triggering event."""
    events: list[dict[str, JSON]]
    """Triggering events in wire form; one unless the run is a batch."""
    status: RunStatus
    created_at: int
    started_at: int | None = None
    ended_at: int | None = None
    output: JSON = None
    error: dict[str, JSON] | None = None
    pending: list[str] = dataclasses.field(default_factory=list)
    """Hashed step ids the run waits on before its next discovery call."""
    disable_immediate: bool = False
    """Set after a response with several ops: SDKs then plan new steps instead of running them inline."""
    request_version: int = -1
    step_count: int = 0
    """Number of recorded steps; the next recorded step gets ``seq = step_count``."""
    correlation_id: str | None = None
    """For a run started by ``invoke``: ``<parent run id>.<hashed step id>``."""
    task_id: str | None = None
    """The tracked task this run drives (its main run, or its ``on_failure`` handler's run)."""


@dataclasses.dataclass(slots=True)
class StepRecord:
    run_id: str
    step_id: str
    """Hashed step id (sha1 hex of the user id, ``id:n`` for repeats)."""
    name: str
    """The user's step id, for display."""
    kind: str
    """``run``, ``sleep``, ``wait``, ``invoke``, ``send_event``..."""
    result: JSON
    """The memo value sent back to the SDK: ``{"data": x}``, ``{"error": {...}}``, an event, or ``None``."""
    seq: int
    """Completion order within the run (the protocol's stack)."""
    attempts: int
    started_at: int
    ended_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedItems:
    """What ``Store.claim_and_peek`` leased, and how long the queue then has nothing ready."""

    items: list[QueueItem]
    next_available_at: int | None
    """The earliest ``available_at`` in the queue once ``items`` were leased (their new leases
    included), or None when the queue is empty."""


@dataclasses.dataclass(slots=True)
class QueueItem:
    id: str
    run_id: str
    kind: ItemKind
    available_at: int
    """When the item may be claimed. While leased, the lease expiry."""
    attempt: int = 0
    """Attempt number of this item's call (0 first); drives per-step retries."""
    step_id: str | None = None
    payload: dict[str, JSON] = dataclasses.field(default_factory=dict)
    claims: int = 0
    """Incremented by every claim; the lease token the holder must present to change the item."""
    created_at: int = 0


@dataclasses.dataclass(slots=True)
class PauseRecord:
    id: str
    run_id: str
    step_id: str
    kind: PauseKind
    expires_at: int
    created_at: int
    timeout_item_id: str
    """The PAUSE_TIMEOUT queue item to delete when the pause is resumed."""
    event_name: str | None = None
    """For waits: the awaited event name."""
    expression: str | None = None
    """For waits: CEL over ``event`` (the run's trigger) and ``async`` (the candidate)."""
    event: dict[str, JSON] | None = None
    """The run's triggering event, the ``event`` variable of ``expression``."""
    correlation_id: str | None = None
    """For invokes: ``<run id>.<step id>``, carried by the child's ``function.finished`` event."""
    step_name: str = ""
    """The user's step id, for display once the pause resolves."""


@dataclasses.dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    function_id: str
    key: str
    run_id: str
    expires_at: int


@dataclasses.dataclass(slots=True)
class FlowKeyRecord:
    """Flow-control state of one function, option and evaluated key (``engine.flow_ingest``).

    What the fields mean depends on ``kind``: the run holding the key (singleton, the pending
    debounced run, the open batch), that run's start item, the batch size, when the window
    opened, and when it is due (debounce, batch) or the rate limit's next allowed time.
    """

    function_id: str
    kind: str
    key: str
    run_id: str | None = None
    item_id: str | None = None
    size: int = 0
    opened_at: int = 0
    due_at: int = 0


@dataclasses.dataclass(slots=True)
class FunctionRecord:
    id: str
    app_id: str
    name: str
    config: dict[str, JSON]
    """The function's wire configuration (triggers, retries, flow control)."""
    updated_at: int
    version: int = 1
    """1 when first registered; incremented by every sync that changes ``config``."""


@dataclasses.dataclass(frozen=True, slots=True)
class FunctionsFingerprint:
    """The ``functions`` table in three numbers, which change whenever a function is synced,
    changed or removed (a sync stamps ``updated_at``, a changed configuration bumps ``version``,
    a removal lowers the count)."""

    count: int
    latest: int
    versions: int

    @classmethod
    def of(cls, functions: Sequence[FunctionRecord]) -> FunctionsFingerprint:
        return cls(
            len(functions),
            max((record.updated_at for record in functions), default=0),
            sum(record.version for record in functions),
        )


@dataclasses.dataclass(slots=True)
class AppRecord:
    id: str
    """The app id (``appname`` in the sync payload)."""
    url: str
    """The serve URL calls are sent to."""
    synced_at: int
    framework: str | None = None
    sdk: str | None = None
    checksum: str | None = None
    """sha256 of the last synced payload: an unchanged sync is a no-op."""
    error: str | None = None
    """Why the last sync attempt failed, if it did."""


@dataclasses.dataclass(slots=True)
class CronRecord:
    function_id: str
    schedule: str
    """The cron expression, possibly with a ``TZ=`` prefix."""
    next_fire_at: int


class TaskStatus(enum.StrEnum):
    """What an end user waits on; follows the task's run (see ``engine.tasks``)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclasses.dataclass(slots=True)
class TaskRecord:
    id: str
    kind: str
    """What the task does, for the client (``tailor_resume``)."""
    owner: str
    """Who may see it (the app's user id)."""
    status: TaskStatus
    event_id: str
    """``internal_id`` of the event the task sent."""
    created_at: int
    updated_at: int
    pending_deadline: int
    """When the sweeper fails the task if it is still pending."""
    pending_timeout_ms: int
    run_id: str | None = None
    """The run the task follows (None if its event triggered no function)."""
    progress: float | None = None
    """0.0 to 1.0, reported by the function; only ever moves forward within a run."""
    message: str | None = None
    result: JSON = None
    error: dict[str, JSON] | None = None
    """``{"name", "message"}``; ``message`` is the reason a UI shows."""
    started_at: int | None = None
    ended_at: int | None = None
    quota_feature: str | None = None
    refund_on_failure: bool = False
    version: int = 1
    """Incremented by every change: what stream readers compare."""


def task_from_json(snapshot: dict[str, JSON]) -> TaskRecord:
    """A task row as JSON, on either backend: a ``task_changes`` snapshot (made by the trigger)
    or the existing task ``stepline_create_task`` returns (PostgreSQL's ``to_jsonb`` of the row)."""
    progress = snapshot.get("progress")
    return TaskRecord(
        id=str(snapshot["id"]),
        kind=str(snapshot["kind"]),
        owner=str(snapshot["owner"]),
        status=TaskStatus(snapshot["status"]),
        event_id=str(snapshot["event_id"]),
        run_id=snapshot.get("run_id"),
        progress=None if progress is None else float(progress),
        message=snapshot.get("message"),
        result=snapshot.get("result"),
        error=snapshot.get("error"),
        created_at=int(snapshot["created_at"]),
        updated_at=int(snapshot["updated_at"]),
        started_at=snapshot.get("started_at"),
        ended_at=snapshot.get("ended_at"),
        pending_deadline=int(snapshot["pending_deadline"]),
        pending_timeout_ms=int(snapshot["pending_timeout_ms"]),
        quota_feature=snapshot.get("quota_feature"),
        refund_on_failure=bool(snapshot.get("refund_on_failure")),
        version=int(snapshot["version"]),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaRequest:
    """Consume one use of ``feature`` for ``owner``, at most ``limit`` uses per ``window_ms``."""

    feature: str
    owner: str
    limit: int
    window_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedRun:
    """A run a task's event starts if its idempotency key is free, with its first queue item."""

    run: RunRecord
    item: QueueItem
    claim: IdempotencyClaim


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPlan:
    """Everything ``Transaction.create_task`` writes for a task whose functions have no flow
    control: known in full before the transaction starts, so a backend can write it at once."""

    task: TaskRecord
    """Pending, ``run_id`` None: the store sets it to the first run it starts."""
    serialise: bool
    """The client chose the id (a retry may race its first attempt): take the id's lock first."""
    quota: QuotaRequest | None
    event: EventRecord
    runs: Sequence[PlannedRun]
    """In the order the engine would start them; ``task_id`` None in each."""
    now: int
    functions: FunctionsFingerprint | None = None
    """The synced functions the runs were planned from. When given, the store writes nothing
    and answers ``stale`` if the ``functions`` table has changed since (the planner reloads and
    plans again): a process whose copy of the functions is old never plans from it."""


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPlanOutcome:
    """What ``create_task`` did. Only ``created`` wrote anything."""

    existing: TaskRecord | None = None
    """The id was taken (a retried enqueue): nothing written."""
    quota_wait_ms: int | None = None
    """The owner's quota is used up; a use frees in this many ms. Nothing written."""
    created: TaskRecord | None = None
    """The task as stored (its ``run_id`` is the first run started)."""
    started: Sequence[str] = ()
    """Runs started: the planned runs whose idempotency key was free, in plan order. When runs
    were planned and none started, nothing is written (the engine refuses the task)."""
    listeners: bool = False
    """Wait or cancel pauses await the event's name: nothing written. Matching them takes the
    engine's expressions, so the engine enqueues the general way (``engine.tasks``)."""
    stale: bool = False
    """The plan's ``functions`` fingerprint is not the table's any more: nothing written."""


@dataclasses.dataclass(frozen=True, slots=True)
class IdRange:
    """The ids one page of a list may hold: ``lower <= id < upper``, read newest first.

    Ids are ULIDs, whose first ten characters encode the millisecond they were made, so they
    sort by creation time and a creation-time window is an id range too: every page of
    ``list_runs`` and ``list_events`` is one range scan of an index ending in the id. The
    next page's cursor is the last id of the previous one (exclusive).
    """

    MAX: ClassVar[str] = "\U0010ffff"
    """Sorts after every id (bytewise in SQLite and under PostgreSQL's ``COLLATE "C"``)."""

    lower: str = ""
    """Inclusive; the empty string admits every id."""
    upper: str = MAX
    """Exclusive; ``MAX`` admits every id."""

    @classmethod
    def page(cls, cursor: str | None, created_after: int | None = None, created_before: int | None = None) -> IdRange:
        """Ids below ``cursor``, made at or after ``created_after`` and before ``created_before``
        (epoch milliseconds, as the id encodes them)."""
        upper = cls.MAX if created_before is None else cls.floor(created_before)
        if cursor is not None:
            upper = min(upper, cursor)
        lower = "" if created_after is None else cls.floor(created_after)
        return cls(lower=lower, upper=upper)

    @classmethod
    def floor(cls, millis: int) -> str:
        """The smallest ULID made at ``millis`` (epoch ms): ids made then or later sort at or after it."""
        if millis <= 0:
            return ""
        if millis >= 2**48:  # past the ULID time field (year 10889)
            return cls.MAX
        crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
        return "".join(crockford[(millis >> shift) & 31] for shift in range(45, -1, -5)) + "0" * 16


@dataclasses.dataclass(frozen=True, slots=True)
class MinuteCount:
    """How many runs started (``what="started"``) or ended in a status, in one minute."""

    minute: int
    """The minute's start, epoch milliseconds."""
    what: str
    """``started``, ``completed``, ``failed`` or ``cancelled``."""
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class StepTiming:
    """When a ``step.run`` ended and how long its last attempt took (milliseconds)."""

    ended_at: int
    duration: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReadyQueue:
    """Queue items that are claimable now, and when the oldest of them became so."""

    ready: int
    oldest_ready_at: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class RunConcurrency:
    """The concurrency keys of a run (one or two, with their limits), evaluated at its creation.

    Every queue item of the run inherits them; see ``storage.slots``."""

    run_id: str
    key1: str
    limit1: int
    key2: str | None = None
    limit2: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Purged:
    """What one batch of retention deleted (``Store.purge_*``): rows per table, and whether the
    batch was full, so that more may be waiting (another call deletes the next batch)."""

    rows: dict[str, int]
    full: bool
