"""Enqueue and read tasks straight in the server's PostgreSQL database, from the app's process.

A route that enqueues over HTTP crosses two processes before it can answer: its app, then the
Stepline server, which writes the task. When the app can reach the server's PostgreSQL database
(the deployment of docs/tasks.md, where the app's tables live there too), ``DirectRuntime``
writes the same rows from the app's process instead: the same planning and the same
``Store.create_task`` as the server, one round trip to PostgreSQL, whose ``NOTIFY`` at commit
wakes the servers' executors. ``client.tasks`` (enqueue, get, list, stream, cancel, progress)
goes to it once it is started with the client; ``client.send`` still goes to a server. Times
(a task's deadline, its run's first item) come from the app host's clock, as with
``enqueue_in``: hosts must keep their clocks in sync, or runs wait for the difference.

It executes nothing: no executor, cron or sweeper (``executes = False``), and it changes no
schema (it refuses one that is not its own); the servers run the work. It plans runs from the functions apps synced
into the database, read at start and read again whenever the store finds that they changed
since (a plan carries their fingerprint: ``records.TaskPlan.functions``), so a task is never
planned from functions older than the database's. SQLite is refused: its database belongs to
one server process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from stepline import errors
from stepline.engine import core, synced, task_stream
from stepline.engine import link as link_
from stepline.engine import registry as registry_
from stepline.sdk import client as client_
from stepline.storage import records
from stepline.storage import url as url_


class DirectRuntime(core.EngineCore):
    """``client.tasks`` and ``client.send`` in this process, on ``database_url`` (PostgreSQL)."""

    executes = False

    def __init__(self, client: client_.Stepline, database_url: str, *, pool_size: int = 4) -> None:
        if url_.parse_database_url(database_url).backend != "postgres":
            raise errors.ConfigurationError(
                "tasks can be enqueued straight in the database only on PostgreSQL: a SQLite database "
                "belongs to its one server (send tasks to it over HTTP instead)"
            )
        super().__init__(registry_.Registry(), database_url, pool_size=pool_size, background=False)
        self.client = client
        self._synced = synced.SyncedFunctions(self.registry)

    async def _on_open(self) -> None:
        await self._synced.reload(self.store)
        self.client.attach_sender(None, _DirectLink(self, stream_poll_s=task_stream.POLL_S))  # events go to a server

    async def _on_close(self) -> None:
        self.client.attach_sender(None)

    def _planned_from(self) -> records.FunctionsFingerprint | None:
        return self._synced.fingerprint

    async def _reload_functions(self) -> None:
        await self._synced.reload(self.store)


class _DirectLink(link_.ClientLink):
    """``client.tasks`` for apps: a database that cannot be reached is ``EventSendError``, the
    error the same calls raise over HTTP when the server cannot be reached, so a route that
    answers 503 for one answers 503 for the other."""

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        try:
            yield
        except errors.StorageError as exc:
            raise errors.EventSendError(f"the Stepline database is unavailable: {exc}") from exc
