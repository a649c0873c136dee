"""``stepline.django.serve`` and ``stepline.django.task_routes``: see ``stepline.sdk.django``."""

from __future__ import annotations

from stepline.sdk.django import serve, task_routes

__all__ = ["serve", "task_routes"]
