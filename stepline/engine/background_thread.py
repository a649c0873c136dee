"""An engine on an event loop of its own thread, for synchronous apps (Flask, Django, scripts).

An async app starts its engine in its own loop (``async with engine:`` in a lifespan). A WSGI
app has no loop to lend: ``EngineThread`` makes one in a daemon thread, starts the engine
there and answers the app's synchronous calls (``client.send_sync``, ``client.tasks.*_sync``),
which ``ClientLink`` already hands to the engine's loop from any thread. Stopping drains the
engine as ``engine.stop`` does (in-flight calls get their grace), then ends the loop and the
thread; so does the interpreter's exit, through ``atexit``, if the app never stops it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  (registers its exit hook before ours: see _before_exit)
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from stepline import errors

THREAD_NAME = "stepline-engine"
START_TIMEOUT_S = 60.0
"""How long starting may take (opening the database, migrating it) before it counts as failed."""
STOP_MARGIN_S = 30.0
"""How long closing may take after the grace of in-flight calls."""


class EngineThread:
    """The loop and thread one engine runs on; ``start`` and ``stop`` are called from other threads."""

    def __init__(
        self, start: Callable[[], Coroutine[Any, Any, None]], stop: Callable[[timedelta], Coroutine[Any, Any, None]]
    ) -> None:
        self._start = start
        self._stop = stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def forked(self) -> bool:
        """Whether this is a child process holding a copy of an engine its parent started (the
        thread did not survive the fork)."""
        return self._thread is not None and self._pid != os.getpid()

    def start(self) -> None:
        """Start the loop, then the engine on it; the engine's error if it cannot start (and then
        no thread is left behind)."""
        with self._lock:
            if self._thread is not None:
                raise errors.ConfigurationError("the engine is already running in a thread")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=THREAD_NAME, daemon=True)
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._start(), loop).result(START_TIMEOUT_S)
            except BaseException:
                _end(loop, thread)
                raise
            self._loop, self._thread, self._pid = loop, thread, os.getpid()
            # Before the interpreter's thread pools shut down (plain ``atexit`` runs after them,
            # when the engine could no longer run sync functions), and only once.
            _before_exit(self.stop)

    def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Stop the engine (in-flight calls get ``grace`` to finish), then the loop and thread.
        Nothing happens if it is not running."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None or self.forked:
                return  # a forked process holds a copy of the parent's engine: it is the parent's to stop
            if threading.current_thread() is thread:
                raise errors.ConfigurationError(
                    "the engine's thread cannot stop itself: stop it from the app's thread, or await engine.stop()"
                )
            self._loop = self._thread = None
            try:
                stopping = asyncio.run_coroutine_threadsafe(self._stop(grace), loop)
                stopping.result(grace.total_seconds() + STOP_MARGIN_S)
            finally:
                _end(loop, thread)


def _end(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """End what is left on ``loop`` as ``asyncio.run`` does, stop it, join its thread and close it."""
    try:
        if thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_the_rest(loop), loop).result(STOP_MARGIN_S)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(STOP_MARGIN_S)
    finally:
        if not thread.is_alive():  # closed even when the rest did not end in time: the engine sees it gone
            loop.close()


async def _cancel_the_rest(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still on the loop (calls of the app's threads waiting on a stream, which
    then raise instead of waiting forever), then close its async generators (the SDK's HTTP
    sessions)."""
    rest = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    await loop.shutdown_asyncgens()


def _before_exit(stop: Callable[[], None]) -> None:
    """Call ``stop`` when the interpreter exits, before ``concurrent.futures`` shuts its thread
    pools down: ``threading._register_atexit`` callbacks run in reverse order of registration,
    and the pools register theirs when ``concurrent.futures.thread`` is first imported, which
    this module's import makes sure happened first. Held weakly: a stopped engine's
    registration does nothing."""
    held = weakref.WeakMethod(stop)

    def at_exit() -> None:
        method = held()
        if method is not None:
            method()

    threading._register_atexit(at_exit)  # type: ignore[attr-defined]
