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
from stepline.engine import core, dispatch, synced
from stepline.engine import registry as registry_
from stepline.server import dispatch as http_dispatch
from stepline.server import settings as settings_
from stepline.server import sync
from stepline.storage import records

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
            retention=settings.retention,
            execute_runs=settings.executes,
        )
        self.settings = settings
        self._http = http_dispatch.HttpTransport(signing_key=settings.signing_key, timeout_s=settings.call_timeout_s)
        self.syncer = sync.Syncer(self)
        self._synced = synced.SyncedFunctions(self.registry)

    def _transport(self) -> dispatch.Transport:
        return self._http

    async def _on_open(self) -> None:
        await self.reload_functions()

    async def _on_close(self) -> None:
        await self._http.close()
        await self.syncer.close()

    def _background_jobs(self) -> list[Coroutine[Any, Any, None]]:
        return [self._refresh_loop(), self.syncer.sync_configured_apps()]

    def _planned_from(self) -> records.FunctionsFingerprint | None:
        return self._synced.fingerprint

    async def _reload_functions(self) -> None:
        await self.reload_functions()

    async def reload_functions(self) -> bool:
        """Rebuild the registry from the database if it changed; True when it did."""
        if not await self._synced.reload(self.store):
            return False
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
