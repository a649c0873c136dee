"""The functions an engine runs, indexed by composite id and by trigger event."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from stepline import errors
from stepline.protocol import expressions
from stepline.sdk import function as function_
from stepline.sdk import triggers


class Registry:
    def __init__(self, functions: Iterable[function_.Function | Any]) -> None:
        self.functions: dict[str, function_.Function] = {}
        self._by_event: dict[str, list[tuple[function_.Function, str | None]]] = defaultdict(list)
        given = list(functions)
        failure_handlers = {
            id(fn.on_failure.handler) for fn in given if isinstance(fn, function_.Function) and fn.on_failure
        }
        for item in given:
            if isinstance(item, function_.Function):
                for fn in item.with_failure_handlers():
                    self._add(fn)
            elif callable(item) and id(item) in failure_handlers:
                continue  # an on_failure handler: registered through the function it watches
            else:
                raise errors.ConfigurationError(
                    f"{item!r} is not a stepline function: decorate it with @client.function(...)"
                )

    def _add(self, fn: function_.Function) -> None:
        existing = self.functions.get(fn.composite_id)
        if existing is not None and existing is not fn:
            raise errors.ConfigurationError(f"two functions share the id {fn.composite_id!r}")
        self.functions[fn.composite_id] = fn
        crons = [t for t in fn.triggers if isinstance(t, triggers.CronTrigger)]
        if len(crons) > 1:
            raise errors.ConfigurationError(
                f"function {fn.id!r} has {len(crons)} cron triggers; at most one is supported"
            )
        for trigger in fn.triggers:
            if isinstance(trigger, triggers.EventTrigger):
                self._by_event[trigger.event].append((fn, trigger.if_exp))

    def get(self, function_id: str) -> function_.Function | None:
        return self.functions.get(function_id)

    def require(self, function_id: str) -> function_.Function:
        fn = self.functions.get(function_id)
        if fn is None:
            raise errors.FunctionNotFoundError(
                f"no function {function_id!r} is registered with this engine "
                f"(known: {', '.join(sorted(self.functions)) or 'none'})"
            )
        return fn

    def triggered_by(self, event: dict[str, Any]) -> list[function_.Function]:
        """Functions whose event trigger matches ``event`` (name, then the CEL ``if``)."""
        matched: list[function_.Function] = []
        for fn, if_exp in self._by_event.get(str(event.get("name")), ()):
            if (if_exp is None or expressions.matches(if_exp, {"event": event})) and fn not in matched:
                matched.append(fn)
        return matched

    def cron_functions(self) -> list[tuple[function_.Function, triggers.CronTrigger]]:
        found: list[tuple[function_.Function, triggers.CronTrigger]] = []
        for fn in self.functions.values():
            for trigger in fn.triggers:
                if isinstance(trigger, triggers.CronTrigger):
                    found.append((fn, trigger))
        return found
