"""``POST /e/{event_key}``: accept one event or a list, stored with the runs they start, atomically."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import ulid

from stepline import errors
from stepline.protocol import jsonvalue
from stepline.sdk import events as events_
from stepline.server import auth, lane
from stepline.server import runtime as runtime_
from stepline.server.errors import ApiError

MAX_EVENT_BYTES = 512 * 1024
# Names and ids are indexed; PostgreSQL cannot index a key much over 2,700 bytes, and no sane
# name or idempotency key comes near these.
MAX_NAME_CHARS = 256
MAX_ID_CHARS = 512
MAX_BATCH = 5000
MAX_BODY_BYTES = 32 * 1024 * 1024
MIN_TS = 315_532_800_000  # 1980-01-01
MAX_TS = 4_102_444_800_000  # 2100-01-01
SEED_HEADER = "x-inngest-event-id-seed"


def derive_ids(seed: str | None, count: int) -> list[str] | None:
    """Event ids derived from the SDK's seed (``<ms>,<base64 of 10 bytes>``), so a retried send
    gets the same ids and starts no run twice; None when there is no usable seed."""
    if not seed:
        return None
    millis_text, _, entropy_text = seed.partition(",")
    try:
        millis = int(millis_text)
        entropy = base64.b64decode(entropy_text, validate=True)
    except ValueError:
        return None
    if len(entropy) != 10 or not 0 <= millis < 2**48:
        return None
    prefix, counter = entropy[:6], int.from_bytes(entropy[6:], "big")
    return [
        str(ulid.ULID.from_bytes(millis.to_bytes(6, "big") + prefix + ((counter + index) % 2**32).to_bytes(4, "big")))
        for index in range(count)
    ]


EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Event",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "description": "Not 'inngest/...'."},
        "data": {"type": ["object", "null"], "description": "What the functions it triggers read as event.data."},
        "id": {
            "type": ["string", "null"],
            "maxLength": MAX_ID_CHARS,
            "description": "Idempotency id: another event with this id within 24 hours is stored but starts no runs.",
        },
        "ts": {"type": "integer", "minimum": MIN_TS, "maximum": MAX_TS, "description": "Epoch milliseconds."},
        "user": {"type": ["object", "null"]},
        "v": {"type": "string", "description": "A version of the event's schema, kept as sent."},
    },
}
"""What ``validate_event`` takes, for the OpenAPI document (its checks say more: sizes, JSON)."""


def validate_event(raw: object, index: int) -> dict[str, Any]:
    """An event from a client, checked and normalised; ``ApiError`` (400 or 413) saying what is wrong."""
    where = f"event {index}"
    if not isinstance(raw, dict):
        raise ApiError(400, f"{where}: must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, f"{where}: 'name' is required and must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise ApiError(400, f"{where}: 'name' is longer than {MAX_NAME_CHARS} characters")
    if name.lower().startswith(events_.INTERNAL_PREFIX):
        raise ApiError(400, f"{where}: event names starting with 'inngest/' are reserved")
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ApiError(400, f"{where} ({name}): 'data' must be a JSON object")
    data = {key: value for key, value in data.items() if key != "_inngest"}  # internal field, never from clients
    user = raw.get("user") or {}
    if not isinstance(user, dict):
        raise ApiError(400, f"{where} ({name}): 'user' must be a JSON object")
    event: dict[str, Any] = {"name": name, "data": data, "user": user}
    event.update(_optional_fields(raw, f"{where} ({name})"))
    try:
        jsonvalue.check_json(event, f"{where} ({name})")
    except errors.SerializationError as exc:
        raise ApiError(400, str(exc)) from None
    if len(json.dumps(event)) > MAX_EVENT_BYTES:
        raise ApiError(413, f"{where} ({name}) is larger than {MAX_EVENT_BYTES // 1024} KiB")
    return event


def _optional_fields(raw: dict[str, Any], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if raw.get("id") not in (None, ""):
        if not isinstance(raw["id"], str):
            raise ApiError(400, f"{where}: 'id' must be a string")
        if len(raw["id"]) > MAX_ID_CHARS:
            raise ApiError(400, f"{where}: 'id' is longer than {MAX_ID_CHARS} characters")
        fields["id"] = raw["id"]
    ts = raw.get("ts")
    if ts is not None:
        if not isinstance(ts, int) or isinstance(ts, bool) or not MIN_TS <= ts <= MAX_TS:
            raise ApiError(400, f"{where}: 'ts' must be epoch milliseconds between 1980 and 2100")
        fields["ts"] = ts
    if isinstance(raw.get("v"), str):
        fields["v"] = raw["v"]
    return fields


async def ingest(request: lane.Request) -> lane.Reply:
    """Accept one event or a list; each is stored with the runs it starts, all in one transaction."""
    runtime = request.runtime
    try:
        parsed = jsonvalue.loads(request.body)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    batch = parsed if isinstance(parsed, list) else [parsed]
    if not batch:
        raise ApiError(400, "no events: send an event object or a non-empty list")
    if len(batch) > MAX_BATCH:
        raise ApiError(413, f"{len(batch)} events in one request; the limit is {MAX_BATCH}")
    events = [validate_event(raw, index) for index, raw in enumerate(batch)]
    derived = derive_ids(request.header(SEED_HEADER), len(events))
    if derived is not None:
        for event, event_id in zip(events, derived, strict=True):
            event.setdefault("id", event_id)
    result = await runtime.send_wire(events)
    return lane.Reply(200, {"ids": result.event_ids, "status": 200, "run_ids": result.run_ids})


def _event_key(runtime: runtime_.ServerRuntime, params: Mapping[str, str], _: Mapping[str, str]) -> None:
    auth.check_event_key(runtime, params["event_key"])


LANE = (
    lane.Route(
        "POST",
        "/e/{event_key}",
        ingest,
        "Send events",
        {
            200: "The events' ids and the ids of the runs they started.",
            400: "An event is not valid: the error says which and why.",
            401: "Event key not found.",
            413: "Too many events, or an event or the body too large.",
            503: "The database is unavailable: nothing was stored.",
        },
        check=_event_key,
        documented_body={
            "oneOf": [EVENT_SCHEMA, {"type": "array", "items": EVENT_SCHEMA, "minItems": 1, "maxItems": MAX_BATCH}]
        },
        max_body=MAX_BODY_BYTES,
        tag="events",
    ),
)
"""The routes of this module served by the lane."""
