"""Run functions to completion deterministically, in users' tests and ours.

::

    async with stepline.testing.TestEngine(client, functions=[tailor_resume]) as engine:
        ids = await engine.send(stepline.Event(name="ai/tailor.resume", data={"job_id": "j1"}))
        await engine.run_until_idle()            # everything that is ready now
        await engine.advance(timedelta(hours=1)) # move the fake clock, firing sleeps, retries, timeouts
        run = await engine.get_run(ids.run_ids[0])

The engine runs on a temporary SQLite file (or ``database_url``) with a ``FakeClock`` and no
background tasks: nothing happens between calls, and no test ever sleeps.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from stepline.engine import clock as clock_
from stepline.engine import engine as engine_
from stepline.sdk import client as client_
from stepline.sdk import function as function_

FakeClock = clock_.FakeClock


class TestEngine(engine_.Engine):
    """An ``Engine`` in burst mode on a fake clock."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        client: client_.Stepline,
        functions: Iterable[function_.Function | Any],
        database_url: str | None = None,
        *,
        clock: clock_.FakeClock | None = None,
        checkpointing: bool = True,
    ) -> None:
        self._tempdir: str | None = None
        if database_url is None:
            self._tempdir = tempfile.mkdtemp(prefix="stepline-test-")
            database_url = f"sqlite:///{Path(self._tempdir) / 'test.db'}"
        self.fake_clock = clock or clock_.FakeClock()
        super().__init__(
            client,
            functions,
            database_url,
            clock=self.fake_clock,
            background=False,
            checkpointing=checkpointing,
        )

    async def advance(self, delta: timedelta) -> int:
        """Move time forward by ``delta``, running everything that comes due on the way, in order."""
        target = self.fake_clock.now_ms() + round(delta.total_seconds() * 1000)
        processed = await self.run_until_idle()
        while True:
            candidates = [await self.store.next_available_at(), await self.store.next_pending_deadline()]
            assert self._cron is not None
            candidates.append(await self._cron.next_due_ms())
            due = [at for at in candidates if at is not None and at <= target]
            if not due:
                break
            self.fake_clock.set_ms(min(due))
            processed += await self.run_until_idle()
        self.fake_clock.set_ms(target)
        return processed + await self.run_until_idle()

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        await super().stop(grace)
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None
