"""The ``Event`` users send and functions receive."""

from __future__ import annotations

import dataclasses
from typing import Any

from stepline import errors

INTERNAL_PREFIX = "inngest/"


@dataclasses.dataclass(slots=True)
class Event:
    """An immutable fact: ``name`` plus JSON ``data``.

    ``id`` is optional; when given, it is the idempotency key of the runs the event starts
    (sending the same id twice starts each function once). ``ts`` is epoch milliseconds.
    """

    name: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: str | None = None
    ts: int | None = None
    user: dict[str, Any] = dataclasses.field(default_factory=dict)
    v: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name, "data": self.data, "user": self.user}
        if self.id is not None:
            wire["id"] = self.id
        if self.ts is not None:
            wire["ts"] = self.ts
        if self.v is not None:
            wire["v"] = self.v
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Event:
        ts = wire.get("ts")
        return cls(
            name=str(wire.get("name", "")),
            data=dict(wire.get("data") or {}),
            id=wire.get("id"),
            ts=int(ts) if isinstance(ts, int | float) else None,
            user=dict(wire.get("user") or {}),
            v=wire.get("v"),
        )


def validate_event_name(name: object, *, allow_internal: bool = False) -> str:
    """The name, or a ``ConfigurationError`` saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise errors.ConfigurationError("an event needs a non-empty string 'name'")
    if not allow_internal and name.lower().startswith(INTERNAL_PREFIX):
        raise errors.ConfigurationError(f"event name {name!r} is reserved: names starting with 'inngest/' are internal")
    return name
