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
"""How often a call waiting for the loop checks that the loop still runs."""
T = TypeVar("T")


def wait_on(loop: asyncio.AbstractEventLoop, call: Coroutine[Any, Any, T]) -> T:
    """``call`` run on ``loop`` (from another thread), its result or its exception; ``StorageError``
    when the loop stops (or was stopped) before it answered."""
    if loop.is_closed():
        call.close()
        raise errors.StorageError("the engine stopped: its event loop is closed")
    future = asyncio.run_coroutine_threadsafe(call, loop)
    while True:  # in slices: a loop that stops meanwhile never answers
        try:
            return future.result(timeout=STOPPED_CHECK_S)
        except concurrent.futures.CancelledError:
            raise errors.StorageError("the engine stopped before it answered") from None
        except TimeoutError:
            if future.done():
                raise  # the call's own TimeoutError
            if not loop.is_running():
                future.cancel()
                raise errors.StorageError("the engine stopped before it answered") from None
