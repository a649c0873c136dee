"""Functions with raw flow-control configuration, for engine tests.

``client.function`` does not take the flow-control options in this branch; these tests give
the engine the wire configuration an app would sync (``inngest-wire.md`` section 3.4), which is
what the engine reads whichever way a function arrives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stepline.sdk import function as function_


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class FlowFunction(function_.Function):
    raw_flow: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_config(self, serve_url: str) -> dict[str, Any]:
        return function_.Function.to_config(self, serve_url) | self.raw_flow


def with_flow(fn: function_.Function, **flow: Any) -> FlowFunction:
    """``fn`` with wire options added to its configuration (``concurrency=[...]``, ``throttle={...}``)."""
    fields = {field.name: getattr(fn, field.name) for field in dataclasses.fields(function_.Function)}
    return FlowFunction(**fields, raw_flow=flow)
