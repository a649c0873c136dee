"""Stepline's state: events, runs, steps, queue, pauses and cron, on SQLite or PostgreSQL."""

from __future__ import annotations

from stepline.storage.url import open_store

__all__ = ["open_store"]
