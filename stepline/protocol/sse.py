"""Server-sent events (``text/event-stream``): encoding frames, and reading them back.

Task streams use it on both sides: the server's ``GET /v1/tasks/{id}/stream`` writes frames,
the SDK's HTTP client reads them, and ``task_routes`` writes them again for the browser.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering by a proxy (nginx) in front: frames must arrive as they are sent."""
KEEPALIVE = b": keep-alive\n\n"


def frame(event: str, data: Any, event_id: str | int | None = None) -> bytes:
    """One frame; ``data`` is JSON-encoded on one line."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


async def read_frames(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    """``(event, decoded data)`` for each frame in a stream of text lines; comments are skipped."""
    event, data = "message", list[str]()
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, json.loads("\n".join(data))


def last_event_version(header: str | None) -> int | None:
    """The task version a ``Last-Event-ID`` header names (None without one); ``ValueError`` if it
    is not one. Frames' ids are versions, so that is what a reconnecting client sends back."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ValueError(f"Last-Event-ID must be the id of a frame this stream sent (a task version), got {header!r}")
    return int(text)
