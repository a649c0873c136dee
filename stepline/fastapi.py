"""``stepline.fastapi.serve`` and ``task_routes``: see ``stepline.sdk.fastapi``."""

from __future__ import annotations

from stepline.sdk.fastapi import serve, task_routes

__all__ = ["serve", "task_routes"]
