"""Fixtures of the CLI tests: a dev server on a port, on each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stepline.server import settings as settings_
from tests.server import support


@pytest.fixture
def base_url(database_url: str) -> Iterator[str]:
    with support.serve_on_port(settings_.ServerSettings(dev=True, database_url=database_url)) as url:
        yield url
