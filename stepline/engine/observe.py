"""What the engine reports about itself: Prometheus counters and histograms, and optional
OpenTelemetry spans.

The executor and the applier call one function here per event of interest (a run ended, a step
recorded, a call to an app failed to arrive, a sweeper acted, retention deleted rows), one line
at each call site, so the engine's logic does not change with what is measured. Counters live in this process's
``REGISTRY`` (``GET /metrics`` serves it with the gauges read from the database at scrape
time); with several servers, Prometheus sums them.

Spans: when the ``otel`` extra is installed and ``enable_tracing()`` has been called, each
recorded step becomes a span and each ended run a span with the steps as children. Spans are
made after the fact from recorded times, with the trace id derived from the run id, so the
spans of one run, whichever server recorded them, share a trace.
"""

from __future__ import annotations

import hashlib
import importlib.util
from typing import Any

import prometheus_client

from stepline.storage import records

REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)

RUNS_ENDED = prometheus_client.Counter(
    "stepline_runs_ended", "Runs that reached a final state, by status.", ["status"], registry=REGISTRY
)
STEP_SECONDS = prometheus_client.Histogram(
    "stepline_step_duration_seconds",
    "Duration of recorded steps (the attempt that recorded the result), by kind.",
    ["kind"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
DISPATCH_ERRORS = prometheus_client.Counter(
    "stepline_dispatch_errors",
    "Calls to apps that failed to arrive or to answer, by error.",
    ["error"],
    registry=REGISTRY,
)
SWEEPER_ACTIONS = prometheus_client.Counter(
    "stepline_sweeper_actions", "Actions of the task sweeper, by action.", ["action"], registry=REGISTRY
)

RETENTION_DELETED = prometheus_client.Counter(
    "stepline_retention_deleted_rows",
    "Rows retention deleted (finished history, spent flow-control state), by table.",
    ["table"],
    registry=REGISTRY,
)
RETENTION_FAILURES = prometheus_client.Counter(
    "stepline_retention_failures", "Retention passes that failed (retried at the next pass).", registry=REGISTRY
)

_tracer: Any = None


def run_ended(run: records.RunRecord) -> None:
    RUNS_ENDED.labels(run.status.value).inc()
    if _tracer is not None:
        _span_for_run(run)


def step_recorded(run_id: str, name: str, kind: str, started_at: int, ended_at: int, failed: bool = False) -> None:
    STEP_SECONDS.labels(kind).observe(max(0, ended_at - started_at) / 1000)
    if _tracer is not None:
        _span_for_step(run_id, name, kind, started_at, ended_at, failed)


def dispatch_error(error_name: str) -> None:
    DISPATCH_ERRORS.labels(error_name or "Error").inc()


def sweeper_action(action: str) -> None:
    """For the task sweeper: count one action (e.g. ``timed_out``, ``failed``)."""
    SWEEPER_ACTIONS.labels(action).inc()


def retention_deleted(table: str, count: int) -> None:
    """For retention: ``count`` rows of ``table`` deleted."""
    RETENTION_DELETED.labels(table).inc(count)


def retention_failed() -> None:
    RETENTION_FAILURES.inc()


# OpenTelemetry (optional)


def tracing_available() -> bool:
    return (
        importlib.util.find_spec("opentelemetry") is not None
        and importlib.util.find_spec("opentelemetry.trace") is not None
    )


def enable_tracing(tracer_provider: Any = None) -> bool:
    """Emit spans through ``tracer_provider`` (the global one by default); False when the
    ``otel`` extra is not installed."""
    global _tracer
    if not tracing_available():
        return False
    from opentelemetry import trace

    provider = tracer_provider or trace.get_tracer_provider()
    _tracer = provider.get_tracer("stepline")
    return True


def tracing_enabled() -> bool:
    return _tracer is not None


def disable_tracing() -> None:
    global _tracer
    _tracer = None


def _ids(run_id: str) -> tuple[int, int]:
    """The run's trace id and its span id, derived from the run id."""
    digest = hashlib.sha256(run_id.encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def _parent(run_id: str) -> Any:
    from opentelemetry import trace

    trace_id, span_id = _ids(run_id)
    context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(1))
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def _span_for_step(run_id: str, name: str, kind: str, started_at: int, ended_at: int, failed: bool) -> None:
    from opentelemetry import trace

    span = _tracer.start_span(
        f"step {name}",
        context=_parent(run_id),
        start_time=started_at * 1_000_000,
        attributes={"stepline.run_id": run_id, "stepline.step.name": name, "stepline.step.kind": kind},
    )
    if failed:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end(end_time=ended_at * 1_000_000)


def _span_for_run(run: records.RunRecord) -> None:
    from opentelemetry import trace

    # The run's own span: its id is the one the step spans name as their parent. The SDK picks
    # span ids itself, so the run span is a child of that id too; one trace holds them all.
    span = _tracer.start_span(
        f"run {run.function_id}",
        context=_parent(run.id),
        start_time=(run.started_at or run.created_at) * 1_000_000,
        attributes={
            "stepline.run_id": run.id,
            "stepline.function_id": run.function_id,
            "stepline.status": run.status.value,
        },
    )
    if run.status is records.RunStatus.FAILED:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end(end_time=(run.ended_at or run.created_at) * 1_000_000)
