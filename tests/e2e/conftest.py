"""Fixtures for end-to-end tests: a real server (dev or production mode) on SQLite or PostgreSQL.

Starting processes costs about a second each, so the server and the apps are shared by the
tests of a module (``module_database_url``, ``stack``); tests that kill or restart processes
build their own from ``database_url``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL, _with_database, drop_postgres_database, make_postgres_database
from tests.e2e import harness

MODES = ["dev", "production"]


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database per backend, shared by one module's tests (as ``database_url``, but module-scoped)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db')}/stepline.db"
        return
    template: str = request.getfixturevalue("postgres_template")
    name = make_postgres_database(template)
    try:
        yield _with_database(POSTGRES_ADMIN_URL, name)
    finally:
        drop_postgres_database(name)


@dataclasses.dataclass
class Stack:
    """A server (spawned, maybe not answering yet: see ``ready``) and what tests need to talk to it."""

    server: harness.ServerProcess
    api: harness.Api
    directory: Path
    step_log: Path
    _ready: bool = False

    def ready(self) -> Stack:
        """Wait until the server answers ``GET /health`` (at once after the first time)."""
        if not self._ready:
            self.server.wait_healthy()
            self._ready = True
        return self

    @property
    def production(self) -> bool:
        return self.server.production

    @property
    def database_url(self) -> str:
        return self.server.database_url


@pytest.fixture(scope="module", params=MODES)
def stack(
    request: pytest.FixtureRequest, module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A server started with ``stepline dev`` or ``stepline start --signing-key … --event-key …``.

    Only spawned: the fixtures that start apps spawn them meanwhile, then call ``ready()``.
    """
    directory = tmp_path_factory.mktemp(f"stack-{request.param}")
    server = harness.ServerProcess(
        module_database_url, directory / "server.log", production=request.param == "production"
    )
    server.spawn()
    api = server.api()
    try:
        yield Stack(server, api, directory, directory / "steps.db")
    finally:
        api.close()
        server.stop()


def inngest_app_process(
    stack: Stack, *, app_id: str, prefix: str, signing_key: str | None = None, port: int | None = None
) -> harness.AppProcess:
    env = harness.inngest_env(stack.server, stack.step_log, signing_key=signing_key, app_id=app_id)
    env["E2E_EVENT_PREFIX"] = prefix
    return harness.AppProcess(
        "tests.e2e.apps.inngest_app:app", stack.directory / f"{app_id}.log", env, serve_path="/api/inngest", port=port
    )


@pytest.fixture(scope="module")
def inngest_app(stack: Stack) -> Iterator[harness.AppProcess]:
    """The Inngest-SDK app (events ``e2e/*``), synced to the module's server."""
    app = inngest_app_process(stack, app_id="e2e-inngest", prefix="e2e")
    app.spawn()
    try:
        stack.ready()
        app.wait_ready()
        stack.api.sync(app.url)
        yield app
    finally:
        app.stop()
