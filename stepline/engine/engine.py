"""``stepline.Engine``: the engine embedded in the user's own process.

::

    engine = stepline.Engine(client, functions=[...], database_url="sqlite:///.stepline/dev.db")
    async with engine:
        ids = await engine.send(stepline.Event(name="ai/tailor.resume", data={...}))
        run = await engine.wait_for_run(ids.run_ids[0], timeout=30)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from stepline import errors
from stepline.engine import clock as clock_
from stepline.engine import core, dispatch, views
from stepline.engine import link as link_
from stepline.engine import registry as registry_
from stepline.engine import retention as retention_
from stepline.sdk import client as client_
from stepline.sdk import events as events_
from stepline.sdk import function as function_
from stepline.storage import records

DEFAULT_DATABASE_URL = "sqlite:///.stepline/dev.db"


Run = views.Run
Step = views.Step
SendResult = views.SendResult


class Engine(core.EngineCore):
    """Runs ``functions`` of ``client`` durably inside this process (see ``EngineCore`` for options)."""

    def __init__(
        self,
        client: client_.Stepline,
        functions: Iterable[function_.Function | Any],
        database_url: str = DEFAULT_DATABASE_URL,
        *,
        concurrency: int = 32,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(seconds=1),
        pool_size: int = 10,
        checkpointing: bool = True,
        clock: clock_.Clock | None = None,
        background: bool = True,
        retention: timedelta | str | None = retention_.DEFAULT,
    ) -> None:
        specs, self._local_functions = registry_.specs_for(functions)
        for fn in self._local_functions.values():
            if fn.app_id != client.app_id:
                raise errors.ConfigurationError(
                    f"function {fn.id!r} belongs to app {fn.app_id!r}, not to this client's app {client.app_id!r}"
                )
        super().__init__(
            registry_.Registry(specs),
            database_url,
            concurrency=concurrency,
            lease=lease,
            poll_interval=poll_interval,
            pool_size=pool_size,
            checkpointing=checkpointing,
            clock=clock,
            background=background,
            retention=retention,
        )
        self.client = client

    def _transport(self) -> dispatch.Transport:
        return dispatch.InProcessTransport(self.client, self._local_functions)

    async def _on_open(self) -> None:
        now = self.clock.now_ms()
        async with self.store.transaction() as tx:
            for spec in self.registry.functions.values():
                await tx.upsert_function(records.FunctionRecord(spec.id, spec.app_id, spec.name, spec.config, now))
        link = link_.ClientLink(self)
        self.client.attach_sender(link, link)

    async def _on_close(self) -> None:
        self.client.attach_sender(None)

    async def send(self, events: events_.Event | Sequence[events_.Event]) -> views.SendResult:
        """Accept events (stored with the runs they start, atomically); returns their ids and run ids."""
        batch = [events] if isinstance(events, events_.Event) else list(events)
        wire = []
        for event in batch:
            if not isinstance(event, events_.Event):
                raise errors.ConfigurationError(f"send() takes stepline.Event objects, got {type(event).__name__}")
            events_.validate_event_name(event.name)
            wire.append(event.to_wire())
        result = await self.send_wire(wire)
        return views.SendResult(result.event_ids, result.run_ids)
