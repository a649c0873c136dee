"""SDK tests configure clients explicitly: no ``STEPLINE_*`` variable of the caller's shell leaks in."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_stepline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STEPLINE_") and not name.startswith("STEPLINE_TEST_"):
            monkeypatch.delenv(name)
