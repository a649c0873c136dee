"""The server's engine: functions come from synced apps in the database; calls go over HTTP.

Several servers may share one PostgreSQL database. Each reloads the function registry when
another one records a sync (it compares ids and update times every ``REFRESH_S`` seconds),
so every server triggers and dispatches the same set of functions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from stepline import errors
from stepline.engine import core, dispatch
from stepline.engine import registry as registry_
from stepline.server import dispatch as http_dispatch
from stepline.server import settings as settings_
from stepline.server import sync

logger = logging.getLogger("stepline.server")

REFRESH_S = 2.0


class ServerRuntime(core.EngineCore):
    def __init__(self, settings: settings_.ServerSettings) -> None:
        super().__init__(
            registry_.Registry(),
            settings.database_url,
            concurrency=settings.concurrency,
            pool_size=settings.pool_size,
            poll_interval=timedelta(seconds=1),
            checkpointing=False,
        )
        self.settings = settings
        self._http = http_dispatch.HttpTransport(signing_key=settings.signing_key, timeout_s=settings.call_timeout_s)
        self.syncer = sync.Syncer(self)
        self._functions_signature: tuple[tuple[str, int], ...] = ()

    def _transport(self) -> dispatch.Transport:
        return self._http

    async def _on_open(self) -> None:
        await self.reload_functions()

    async def _on_close(self) -> None:
        await self._http.close()
        await self.syncer.close()

    def _background_jobs(self) -> list[Coroutine[Any, Any, None]]:
        return [self._refresh_loop(), self.syncer.sync_configured_apps()]

    async def reload_functions(self) -> bool:
        """Rebuild the registry from the database if it changed; True when it did."""
        found = await self.store.list_functions()
        signature = tuple((record.id, record.updated_at) for record in found)
        if signature == self._functions_signature:
            return False
        specs: list[registry_.FunctionSpec] = []
        for record in found:
            try:
                specs.append(registry_.FunctionSpec.from_config(record.config, record.app_id))
            except errors.ConfigurationError as exc:
                logger.error("function %s is stored with an unusable configuration: %s", record.id, exc)
        self.registry.replace(specs)
        self._functions_signature = signature
        if self._cron is not None:
            await self._register_crons()
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.reload_functions()
            except errors.StorageError as exc:
                logger.warning("could not reload functions: %s", exc)
