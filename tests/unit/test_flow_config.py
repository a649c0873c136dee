"""Parsing the claim-time flow-control options of a function's wire configuration, and the
keys and priorities evaluated from events."""

from __future__ import annotations

from typing import Any

import pytest

from stepline import errors
from stepline.engine import flow_config, flow_keys, throttle
from stepline.engine.flow_config import ConcurrencyLimit, ThrottleConfig


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3, (ConcurrencyLimit(3),)),
        ({"limit": 3}, (ConcurrencyLimit(3),)),
        ([{"limit": 3, "key": "event.data.u", "scope": "env"}], (ConcurrencyLimit(3, "event.data.u", "env"),)),
        (
            {"fn": [{"limit": 2}], "step": [{"limit": 1, "key": "event.data.u"}]},
            (ConcurrencyLimit(2), ConcurrencyLimit(1, "event.data.u")),
        ),
        ([], ()),
    ],
)
def test_every_concurrency_shape_the_protocol_allows(raw: Any, expected: tuple[ConcurrencyLimit, ...]) -> None:
    assert flow_config.parse({"concurrency": raw}, "app-fn").concurrency == expected


def test_throttle_defaults_and_interval() -> None:
    parsed = flow_config.parse({"throttle": {"limit": 4, "period": "1m", "burst": 0}}, "app-fn").throttle
    assert parsed == ThrottleConfig(limit=4, period_ms=60_000, burst=1)
    assert parsed.interval_ms == 15_000


def test_no_options_is_inactive() -> None:
    assert not flow_config.parse({"id": "app-fn"}, "app-fn").active


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"concurrency": {"limit": True}}, "concurrency limit must be a positive integer"),
        ({"concurrency": "five"}, "concurrency must be a number or an object"),
        ({"throttle": {"limit": 1}}, "throttle period must be a time string"),
        ({"throttle": {"limit": 1, "period": "8d"}}, "throttle period must be a time string from 1s to 7d"),
        ({"throttle": {"limit": 1, "period": "1m", "burst": -1}}, "throttle burst"),
        ({"priority": "120"}, "priority must be an object"),
        ({"priority": {"run": "-601"}}, "priority run must be between"),
    ],
)
def test_bad_options_name_the_option(config: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=message):
        flow_config.parse(config, "app-fn")


def test_concurrency_keys_per_scope() -> None:
    event = {"name": "e", "data": {"user": "u1", "n": 5, "obj": {"b": 1, "a": 2}}}
    by_fn = flow_keys.concurrency_key("app-fn", ConcurrencyLimit(1, "event.data.user"), event)
    by_env = flow_keys.concurrency_key("app-fn", ConcurrencyLimit(1, "event.data.user", "env"), event)
    other_fn = flow_keys.concurrency_key("app-other", ConcurrencyLimit(1, "event.data.user", "env"), event)

    assert flow_keys.concurrency_key("app-fn", ConcurrencyLimit(1), event) == "app-fn"
    assert by_fn != by_env == other_fn  # env scope: shared across functions using the expression
    assert flow_keys.evaluate("event.data.n", event) == "5"
    assert flow_keys.evaluate("event.data.obj", event) == '{"a":2,"b":1}'
    assert flow_keys.evaluate("event.data.missing", event) == ""
    assert flow_keys.evaluate(" + ".join(["event.data.user"] * 150), event).startswith("sha256:")


def test_one_key_given_twice_keeps_the_tighter_limit() -> None:
    flow = flow_config.parse({"concurrency": [{"limit": 5}, {"limit": 2}]}, "app-fn")
    keys = flow_keys.run_concurrency("run-1", "app-fn", flow, {})
    assert keys is not None
    assert (keys.key1, keys.limit1, keys.key2) == ("app-fn", 2, None)


def test_gcra_start_times() -> None:
    config = ThrottleConfig(limit=1, period_ms=10_000, burst=3)
    tat = 0
    starts = []
    for _ in range(5):  # five arrivals at t=0
        tat = max(tat, 0) + config.interval_ms
        starts.append(throttle.start_time(tat, 0, config))
    assert starts == [0, 0, 0, 10_000, 20_000]
