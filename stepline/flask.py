"""``stepline.flask.serve`` and ``stepline.flask.task_routes``: see ``stepline.sdk.flask``."""

from __future__ import annotations

from stepline.sdk.flask import serve, task_routes

__all__ = ["serve", "task_routes"]
