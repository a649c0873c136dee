"""Calling into an engine's event loop from another thread (sync functions, sync routes).

``asyncio.run_coroutine_threadsafe(...).result()`` waits forever if the loop stops before it
runs the call (an engine stopped, or started in a thread and shut down), and leaves an
un-awaited coroutine behind if the loop is already closed. ``wait_on`` raises instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from stepline import errors

STOPPED_CHECK_S = 0.5
"""How often a call waiting for the loop checks that the loop is not closed."""
T = TypeVar("T")


def wait_on(loop: asyncio.AbstractEventLoop, call: Coroutine[Any, Any, T]) -> T:
    """``call`` run on ``loop`` (from another thread), its result or its exception; ``StorageError``
    when the loop is closed, or the call cancelled by a stopping engine, before it answered. (A
    loop that is merely not running at a given moment may run again: that is waited for.)"""
    if loop.is_closed():
        call.close()
        raise errors.StorageError("the engine stopped: its event loop is closed")
    future = asyncio.run_coroutine_threadsafe(call, loop)
    while True:  # in slices: a loop closed meanwhile never answers
        try:
            return future.result(timeout=STOPPED_CHECK_S)
        except concurrent.futures.CancelledError:
            raise errors.StorageError("the engine stopped before it answered") from None
        except TimeoutError:
            if future.done():  # it ended between the wait and this check: its own outcome
                return _outcome(future)
            if loop.is_closed():
                future.cancel()
                raise errors.StorageError("the engine stopped before it answered") from None


def _outcome(future: concurrent.futures.Future[T]) -> T:
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise errors.StorageError("the engine stopped before it answered") from None
