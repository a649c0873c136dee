"""Server-sent events (``text/event-stream``): encoding frames, and reading them back.

Task streams use it on both sides: the server's ``GET /v1/tasks/{id}/stream`` writes frames,
the SDK's HTTP client reads them, and ``task_routes`` writes them again for the browser.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering by a proxy (nginx) in front: frames must arrive as they are sent."""
KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_S = 15.0
"""A quiet stream sends ``KEEPALIVE`` this often: proxies' idle timeouts (nginx: 60 s) do not cut
it, and writing it is how a server learns that its client went away."""


def frame(event: str, data: Any, event_id: str | int | None = None) -> bytes:
    """One frame; ``data`` is JSON-encoded on one line."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


COMMENT = ":"
"""The event ``read_frames(..., comments=True)`` gives a comment line (a keep-alive), with None."""


class FrameReader:
    """Frames out of a stream of text lines, fed one line at a time (for both the async and the
    sync readers below): ``feed`` returns ``(event, decoded data)`` when a line ends a frame, and
    ``(COMMENT, None)`` for a comment line if ``comments``."""

    def __init__(self, *, comments: bool = False) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._comments = comments

    def feed(self, raw: str) -> tuple[str, Any] | None:
        line = raw.rstrip("\r\n")
        if not line:
            return self.end()
        if line.startswith(":"):  # a comment: a keep-alive
            return (COMMENT, None) if self._comments else None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None

    def end(self) -> tuple[str, Any] | None:
        """The frame the stream ended inside, if any; the reader starts afresh."""
        found = (self._event, json.loads("\n".join(self._data))) if self._data else None
        self._event, self._data = "message", []
        return found


async def read_frames(lines: AsyncIterator[str], *, comments: bool = False) -> AsyncIterator[tuple[str, Any]]:
    """``(event, decoded data)`` for each frame in a stream of text lines; comments are skipped,
    or given as ``(COMMENT, None)`` with ``comments``."""
    reader = FrameReader(comments=comments)
    async for raw in lines:
        found = reader.feed(raw)
        if found is not None:
            yield found
    found = reader.end()
    if found is not None:
        yield found


def read_frames_sync(lines: Iterable[str], *, comments: bool = False) -> Iterator[tuple[str, Any]]:
    """``read_frames`` for synchronous code."""
    reader = FrameReader(comments=comments)
    for raw in lines:
        found = reader.feed(raw)
        if found is not None:
            yield found
    found = reader.end()
    if found is not None:
        yield found


def has_the_end(seen: int | None, version: int, terminal: bool) -> bool:
    """Whether a client that has seen version ``seen`` of a task (its ``Last-Event-ID``) already
    has the final state: its stream is then answered 204, the one answer that stops a browser's
    ``EventSource`` reconnecting."""
    return terminal and seen == version


def last_event_version(header: str | None) -> int | None:
    """The task version a ``Last-Event-ID`` header names (None without one); ``ValueError`` if it
    is not one. Frames' ids are versions, so that is what a reconnecting client sends back."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ValueError(f"Last-Event-ID must be the id of a frame this stream sent (a task version), got {header!r}")
    return int(text)
