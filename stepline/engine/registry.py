"""The functions an engine runs, described by their wire configuration.

Embedded functions and functions synced from apps over HTTP are both read from the same
JSON configuration (``inngest-wire.md`` section 3.4), so both paths share one meaning of
triggers and retries.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from stepline import errors
from stepline.engine import flow_config, flow_options
from stepline.protocol import expressions
from stepline.sdk import function as function_
from stepline.sdk import triggers

DEFAULT_RETRIES = function_.DEFAULT_RETRIES
MAX_RETRIES = function_.MAX_RETRIES
MAX_TRIGGERS = 10


@dataclasses.dataclass(frozen=True, slots=True)
class EventTriggerSpec:
    event: str
    expression: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FunctionSpec:
    id: str
    """Composite id ``<app_id>-<fn_id>``."""
    app_id: str
    name: str
    event_triggers: tuple[EventTriggerSpec, ...]
    cron: str | None
    retries: int
    url: str | None
    """Where to POST calls (``?fnId=...&stepId=step``); None for functions in this process."""
    config: dict[str, Any]
    flow: flow_options.IngestFlow = dataclasses.field(default_factory=flow_options.IngestFlow)
    """Options acted on as events arrive (rate limit, debounce, batch, cancel, timeouts...)."""
    limits: flow_config.FlowConfig = flow_config.NONE
    """Flow control applied when a run is created and at claim time (concurrency, throttle,
    priority), parsed from ``config``."""

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @classmethod
    def from_config(cls, config: dict[str, Any], app_id: str) -> FunctionSpec:
        """Parse and validate one function's configuration; ``ConfigurationError`` names the problem."""
        fn_id = config.get("id")
        if not isinstance(fn_id, str) or not fn_id:
            raise errors.ConfigurationError("every function needs a non-empty string 'id'")
        raw_triggers = config.get("triggers") or []
        if not isinstance(raw_triggers, list) or not raw_triggers or len(raw_triggers) > MAX_TRIGGERS:
            raise errors.ConfigurationError(f"function {fn_id!r} needs 1 to {MAX_TRIGGERS} triggers")
        event_triggers: list[EventTriggerSpec] = []
        crons: list[str] = []
        for trigger in raw_triggers:
            if isinstance(trigger, dict) and isinstance(trigger.get("event"), str) and trigger["event"]:
                expression = trigger.get("expression") or None
                if expression is not None:
                    try:
                        expressions.compile_expression(str(expression))
                    except errors.ExpressionError as exc:
                        raise errors.ExpressionError(f"function {fn_id!r}: trigger {exc}") from None
                event_triggers.append(EventTriggerSpec(trigger["event"], expression))
            elif isinstance(trigger, dict) and isinstance(trigger.get("cron"), str):
                triggers.on_cron(trigger["cron"])  # validates, including a TZ= prefix
                crons.append(trigger["cron"])
            else:
                raise errors.ConfigurationError(f"function {fn_id!r}: a trigger needs 'event' or 'cron': {trigger!r}")
        if len(crons) > 1:
            raise errors.ConfigurationError(
                f"function {fn_id!r} has {len(crons)} cron triggers; at most one is supported"
            )
        step = _object_at(_object_at(config, "steps", fn_id), "step", fn_id)
        retries = _object_at(step, "retries", fn_id).get("attempts", config.get("retries", DEFAULT_RETRIES))
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise errors.ConfigurationError(f"function {fn_id!r}: retries must be a non-negative integer")
        url = _object_at(step, "runtime", fn_id).get("url")
        return cls(
            id=fn_id,
            app_id=app_id,
            name=str(config.get("name") or fn_id),
            event_triggers=tuple(event_triggers),
            cron=crons[0] if crons else None,
            retries=min(retries, MAX_RETRIES),
            url=url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
            config=config,
            flow=flow_options.parse(config, fn_id),
            limits=flow_config.parse(config, fn_id),
        )


def _object_at(parent: dict[str, Any], key: str, fn_id: str) -> dict[str, Any]:
    """``parent[key]`` when it is a JSON object, ``{}`` when absent; anything else is a config error."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.ConfigurationError(f"function {fn_id!r}: {key!r} must be an object")
    return value


def specs_for(
    functions: Iterable[function_.Function | Any],
) -> tuple[list[FunctionSpec], dict[str, function_.Function]]:
    """Specs of local functions (with their on_failure functions), and the functions by id."""
    given = list(functions)
    failure_handlers = {
        id(fn.on_failure.handler) for fn in given if isinstance(fn, function_.Function) and fn.on_failure
    }
    local: dict[str, function_.Function] = {}
    for item in given:
        if isinstance(item, function_.Function):
            for fn in item.with_failure_handlers():
                existing = local.get(fn.composite_id)
                if existing is not None and existing is not fn:
                    raise errors.ConfigurationError(f"two functions share the id {fn.composite_id!r}")
                local[fn.composite_id] = fn
        elif callable(item) and id(item) in failure_handlers:
            continue  # an on_failure handler: registered through the function it watches
        else:
            raise errors.ConfigurationError(
                f"{item!r} is not a stepline function: decorate it with @client.function(...)"
            )
    specs = [FunctionSpec.from_config(fn.to_config(f"embedded://{fn.app_id}"), fn.app_id) for fn in local.values()]
    return specs, local


class Registry:
    """Functions by composite id and by trigger event. ``replace`` swaps the whole set (after a sync)."""

    def __init__(self, specs: Iterable[FunctionSpec] = ()) -> None:
        self.functions: dict[str, FunctionSpec] = {}
        self._by_event: dict[str, list[FunctionSpec]] = {}
        self.replace(specs)

    def replace(self, specs: Iterable[FunctionSpec]) -> None:
        functions: dict[str, FunctionSpec] = {}
        by_event: dict[str, list[FunctionSpec]] = defaultdict(list)
        for spec in specs:
            functions[spec.id] = spec
            for trigger in spec.event_triggers:
                by_event[trigger.event].append(spec)
        self.functions, self._by_event = functions, dict(by_event)

    def get(self, function_id: str) -> FunctionSpec | None:
        return self.functions.get(function_id)

    def triggered_by(self, event: dict[str, Any]) -> list[FunctionSpec]:
        """Functions whose event trigger matches ``event`` (name, then the CEL expression)."""
        matched: list[FunctionSpec] = []
        for spec in self._by_event.get(str(event.get("name")), ()):
            if spec in matched:
                continue
            for trigger in spec.event_triggers:
                if trigger.event != event.get("name"):
                    continue
                if trigger.expression is None or expressions.matches(trigger.expression, {"event": event}):
                    matched.append(spec)
                    break
        return matched

    def cron_functions(self) -> list[FunctionSpec]:
        return [spec for spec in self.functions.values() if spec.cron is not None]
