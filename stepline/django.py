"""``stepline.django.serve``: see ``stepline.sdk.django``."""

from __future__ import annotations

from stepline.sdk.django import serve

__all__ = ["serve"]
