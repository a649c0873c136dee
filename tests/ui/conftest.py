"""Fixtures of the dashboard tests: a dev server in process (ASGI, lifespan on), on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stepline.server import settings as settings_
from tests.server import support


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[support.Server]:
    async with support.serve(settings_.ServerSettings(dev=True, database_url=database_url)) as running:
        yield running
