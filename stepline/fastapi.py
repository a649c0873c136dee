"""``stepline.fastapi.serve``: see ``stepline.sdk.fastapi``."""

from __future__ import annotations

from stepline.sdk.fastapi import serve

__all__ = ["serve"]
