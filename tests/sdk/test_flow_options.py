"""Flow-control options of ``client.function(...)``: the sync JSON they produce matches what the
Inngest Python SDK sends for the same options, and bad values are refused at definition."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import inngest
import pytest

import stepline
from stepline.engine import registry

FLOW_FIELDS = (
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


def without_none(value: Any) -> Any:
    """What the Inngest SDK puts on the wire: its handler drops null fields before sending."""
    if isinstance(value, dict):
        return {key: without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_none(item) for item in value]
    return value


def inngest_config(**options: Any) -> dict[str, Any]:
    client = inngest.Inngest(app_id="flowapp", is_production=False)

    @client.create_function(fn_id="fn", trigger=inngest.TriggerEvent(event="app/ev"), **options)
    def fn(ctx: inngest.ContextSync) -> None:
        return None

    config: dict[str, Any] = without_none(fn.get_config("http://127.0.0.1:8000/api").main.to_dict())
    return {field: config[field] for field in FLOW_FIELDS if field in config}


def stepline_config(**options: Any) -> dict[str, Any]:
    client = stepline.Stepline(app_id="flowapp")

    @client.function(id="fn", trigger=stepline.on_event("app/ev"), **options)
    async def fn(ctx: stepline.Context) -> None:
        return None

    config = fn.to_config("http://127.0.0.1:8000/api")
    return {field: config[field] for field in FLOW_FIELDS if field in config}


MINUTE = timedelta(minutes=1)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "concurrency": (
        {"concurrency": [stepline.Concurrency(limit=5), stepline.Concurrency(limit=1, key="event.data.user_id")]},
        {"concurrency": [inngest.Concurrency(limit=5), inngest.Concurrency(limit=1, key="event.data.user_id")]},
    ),
    "concurrency scope": (
        {"concurrency": [stepline.Concurrency(limit=3, key="event.data.a", scope="env")]},
        {"concurrency": [inngest.Concurrency(limit=3, key="event.data.a", scope="env")]},
    ),
    "throttle": (
        {"throttle": stepline.Throttle(limit=10, period=MINUTE)},
        {"throttle": inngest.Throttle(limit=10, period=MINUTE)},
    ),
    "throttle keyed with burst": (
        {"throttle": stepline.Throttle(limit=10, period=timedelta(seconds=90), burst=2, key="event.data.k")},
        {"throttle": inngest.Throttle(limit=10, period=timedelta(seconds=90), burst=2, key="event.data.k")},
    ),
    "rate limit": (
        {"rate_limit": stepline.RateLimit(limit=1, period=timedelta(hours=1), key="event.data.a")},
        {"rate_limit": inngest.RateLimit(limit=1, period=timedelta(hours=1), key="event.data.a")},
    ),
    "debounce": (
        {"debounce": stepline.Debounce(period=timedelta(seconds=10))},
        {"debounce": inngest.Debounce(period=timedelta(seconds=10))},
    ),
    "debounce keyed with timeout": (
        {"debounce": stepline.Debounce(period=timedelta(seconds=10), key="event.data.d", timeout=timedelta(days=1))},
        {"debounce": inngest.Debounce(period=timedelta(seconds=10), key="event.data.d", timeout=timedelta(days=1))},
    ),
    "batch": (
        {"batch_events": stepline.Batch(max_size=100, timeout=timedelta(seconds=5))},
        {"batch_events": inngest.Batch(max_size=100, timeout=timedelta(seconds=5))},
    ),
    "batch keyed with condition": (
        {"batch_events": stepline.Batch(max_size=5, timeout=MINUTE, key="event.data.t", if_exp="event.data.ok")},
        {"batch_events": inngest.Batch(max_size=5, timeout=MINUTE, key="event.data.t", if_exp="event.data.ok")},
    ),
    "priority": (
        {"priority": stepline.Priority(run="event.data.plan == 'pro' ? 120 : 0")},
        {"priority": inngest.Priority(run="event.data.plan == 'pro' ? 120 : 0")},
    ),
    "cancel on": (
        {
            "cancel_on": [
                stepline.CancelOn(
                    event="ai/job.deleted", if_exp="async.data.job_id == event.data.job_id", timeout=timedelta(weeks=1)
                ),
                stepline.CancelOn(event="ai/all.deleted"),
            ]
        },
        {
            "cancel": [
                inngest.Cancel(
                    event="ai/job.deleted", if_exp="async.data.job_id == event.data.job_id", timeout=timedelta(weeks=1)
                ),
                inngest.Cancel(event="ai/all.deleted"),
            ]
        },
    ),
    "idempotency": ({"idempotency": "event.data.request_id"}, {"idempotency": "event.data.request_id"}),
    "timeouts": (
        {"timeouts": stepline.Timeouts(start=timedelta(minutes=5), finish=timedelta(hours=1))},
        {"timeouts": inngest.Timeouts(start=timedelta(minutes=5), finish=timedelta(hours=1))},
    ),
    "timeouts finish only": (
        {"timeouts": stepline.Timeouts(finish=timedelta(seconds=45))},
        {"timeouts": inngest.Timeouts(finish=timedelta(seconds=45))},
    ),
    "singleton": (
        {"singleton": stepline.Singleton(mode="skip")},
        {"singleton": inngest.Singleton(mode="skip")},
    ),
    "singleton keyed cancel": (
        {"singleton": stepline.Singleton(mode="cancel", key="event.data.user")},
        {"singleton": inngest.Singleton(mode="cancel", key="event.data.user")},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sync_json_matches_the_inngest_sdk(case: str) -> None:
    ours, theirs = CASES[case]
    expected = inngest_config(**theirs)
    assert expected, "the Inngest SDK produced no flow-control fields"
    assert stepline_config(**ours) == expected


def test_every_option_together_matches_the_inngest_sdk() -> None:
    ours: dict[str, Any] = {}
    theirs: dict[str, Any] = {}
    for name in ("concurrency", "throttle", "rate limit", "debounce", "priority", "cancel on", "idempotency"):
        ours |= CASES[name][0]
        theirs |= CASES[name][1]
    for name in ("timeouts", "singleton"):
        ours |= CASES[name][0]
        theirs |= CASES[name][1]
    assert stepline_config(**ours) == inngest_config(**theirs)
    assert set(stepline_config(**ours)) == set(FLOW_FIELDS) - {"batchEvents"}


def test_the_server_reads_the_options_back_from_the_sync_json() -> None:
    client = stepline.Stepline(app_id="flowapp")

    @client.function(
        id="fn",
        trigger=stepline.on_event("app/ev"),
        rate_limit=stepline.RateLimit(limit=3, period=timedelta(minutes=2), key="event.data.k"),
        batch_events=stepline.Batch(max_size=7, timeout=timedelta(seconds=9), if_exp="event.data.ok"),
        cancel_on=[stepline.CancelOn(event="app/stop", timeout=timedelta(days=2))],
        idempotency="event.data.id",
        timeouts=stepline.Timeouts(start=timedelta(seconds=30)),
        singleton=stepline.Singleton(mode="cancel"),
    )
    async def fn(ctx: stepline.Context) -> None:
        return None

    flow = registry.FunctionSpec.from_config(fn.to_config("http://127.0.0.1:8000/api"), "flowapp").flow
    assert flow.rate_limit is not None
    assert (flow.rate_limit.limit, flow.rate_limit.period_ms, flow.rate_limit.key) == (3, 120_000, "event.data.k")
    assert flow.batch is not None
    assert (flow.batch.max_size, flow.batch.timeout_ms, flow.batch.if_exp) == (7, 9_000, "event.data.ok")
    assert [(cancel.event, cancel.timeout_ms) for cancel in flow.cancel] == [("app/stop", 172_800_000)]
    assert flow.idempotency == "event.data.id"
    assert flow.timeouts is not None
    assert (flow.timeouts.start_ms, flow.timeouts.finish_ms) == (30_000, None)
    assert flow.singleton is not None
    assert (flow.singleton.mode, flow.singleton.key) == ("cancel", None)


# bad values, refused where the function is defined
SECOND = timedelta(seconds=1)
BAD: dict[str, tuple[Callable[[], object], str]] = {
    "concurrency limit 0": (
        lambda: stepline.Concurrency(limit=0),
        r"concurrency: limit must be an integer of at least 1",
    ),
    "concurrency key": (lambda: stepline.Concurrency(limit=1, key="event.data.("), r"concurrency: key expression"),
    "concurrency scope": (lambda: stepline.Concurrency(limit=1, scope="world"), r"concurrency: scope"),  # type: ignore[arg-type]
    "throttle limit 0": (lambda: stepline.Throttle(limit=0, period=SECOND), r"throttle: limit"),
    "throttle period": (
        lambda: stepline.Throttle(limit=1, period=timedelta(milliseconds=500)),
        r"throttle: period must be at least 1 second",
    ),
    "throttle burst": (lambda: stepline.Throttle(limit=1, period=SECOND, burst=0), r"throttle: burst"),
    "throttle long period": (
        lambda: stepline.Throttle(limit=1, period="8d"),
        r"throttle: period must be at most 7 days",
    ),
    "rate limit 0": (lambda: stepline.RateLimit(limit=0, period=SECOND), r"rate_limit: limit"),
    "rate limit period": (
        lambda: stepline.RateLimit(limit=1, period=timedelta(0)),
        r"rate_limit: period must be at least 1 second",
    ),
    "rate limit long period": (
        lambda: stepline.RateLimit(limit=1, period=timedelta(days=2)),
        r"rate_limit: period must be at most 24 hours",
    ),
    "rate limit key": (lambda: stepline.RateLimit(limit=1, period=SECOND, key="1 +"), r"rate_limit: key expression"),
    "rate limit seconds as int": (
        lambda: stepline.RateLimit(limit=1, period=60),  # type: ignore[arg-type]
        r"rate_limit: period must be a datetime.timedelta",
    ),
    "debounce period": (
        lambda: stepline.Debounce(period=timedelta(milliseconds=10)),
        r"debounce: period must be at least 1 second",
    ),
    "debounce fraction": (
        lambda: stepline.Debounce(period=timedelta(seconds=1.5)),
        r"debounce: period must be a whole number of seconds",
    ),
    "debounce too long": (
        lambda: stepline.Debounce(period=timedelta(days=8)),
        r"debounce: period must be at most 7 days",
    ),
    "debounce timeout": (lambda: stepline.Debounce(period=SECOND, timeout=timedelta(0)), r"debounce: timeout"),
    "batch size 0": (lambda: stepline.Batch(max_size=0, timeout=SECOND), r"batch_events: max_size"),
    "batch timeout": (lambda: stepline.Batch(max_size=2, timeout=timedelta(milliseconds=1)), r"batch_events: timeout"),
    "batch if": (lambda: stepline.Batch(max_size=2, timeout=SECOND, if_exp="=="), r"batch_events: if_exp expression"),
    "priority not a string": (
        lambda: stepline.Priority(run=120),  # type: ignore[arg-type]
        r"priority: run must be a CEL expression in a string",
    ),
    "priority does not compile": (lambda: stepline.Priority(run="event.data.("), r"priority: run expression"),
    "priority out of range": (
        lambda: stepline.Priority(run="700"),
        r"priority: run must give seconds from -600 to 600",
    ),
    "priority below range": (lambda: stepline.Priority(run="-601"), r"priority: run must give seconds"),
    "cancel_on event": (lambda: stepline.CancelOn(event=""), r"cancel_on: an event needs a non-empty string"),
    "cancel_on if": (lambda: stepline.CancelOn(event="a/b", if_exp="async.("), r"cancel_on: if_exp expression"),
    "cancel_on timeout": (lambda: stepline.CancelOn(event="a/b", timeout=timedelta(0)), r"cancel_on: timeout"),
    "timeouts empty": (lambda: stepline.Timeouts(), r"timeouts: give start, finish or both"),
    "timeouts start": (
        lambda: stepline.Timeouts(start=timedelta(milliseconds=999)),
        r"timeouts: start must be at least 1 second",
    ),
    "singleton mode": (lambda: stepline.Singleton(mode="queue"), r"singleton: mode must be 'skip' or 'cancel'"),  # type: ignore[arg-type]
    "singleton key": (lambda: stepline.Singleton(mode="skip", key="x y"), r"singleton: key expression"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_option_values_are_refused_naming_the_option(case: str) -> None:
    build, message = BAD[case]
    with pytest.raises(stepline.ConfigurationError, match=message):
        build()


def define(**options: Any) -> None:
    client = stepline.Stepline(app_id="flowapp")
    client.function(id="fn", trigger=stepline.on_event("app/ev"), **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"idempotency": "event.data.("}, r"function 'fn': idempotency: key expression"),
        ({"idempotency": 5}, r"function 'fn': idempotency: key must be a CEL expression in a string"),
        ({"concurrency": [stepline.Concurrency(limit=1)] * 3}, r"concurrency: at most 2 limits"),
        (
            {"concurrency": stepline.Throttle(limit=1, period=SECOND)},
            r"concurrency must be a list of stepline.Concurrency",
        ),
        ({"rate_limit": {"limit": 1, "period": "1h"}}, r"rate_limit must be a stepline.RateLimit"),
        ({"cancel_on": ["ai/job.deleted"]}, r"cancel_on must be a stepline.CancelOn"),
        (
            {
                "debounce": stepline.Debounce(period=SECOND),
                "batch_events": stepline.Batch(max_size=2, timeout=SECOND),
            },
            r"debounce and batch_events cannot be combined",
        ),
    ],
)
def test_bad_options_of_client_function_are_refused_naming_the_function(options: dict[str, Any], message: str) -> None:
    with pytest.raises(stepline.ConfigurationError, match=message):
        define(**options)


def test_durations_may_be_time_strings() -> None:
    config = stepline_config(
        debounce=stepline.Debounce(period="90s", timeout="1h"), timeouts=stepline.Timeouts(finish="1h30m")
    )
    assert config == {"debounce": {"period": "90s", "timeout": "1h"}, "timeouts": {"finish": "90m"}}
    with pytest.raises(stepline.ConfigurationError, match="debounce: period: invalid duration 'soon'"):
        stepline.Debounce(period="soon")


def test_a_single_option_may_stand_for_a_list() -> None:
    config = stepline_config(concurrency=stepline.Concurrency(limit=2), cancel_on=stepline.CancelOn(event="a/b"))
    assert config == {"concurrency": [{"limit": 2}], "cancel": [{"event": "a/b"}]}
