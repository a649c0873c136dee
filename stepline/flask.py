"""``stepline.flask.serve``: see ``stepline.sdk.flask``."""

from __future__ import annotations

from stepline.sdk.flask import serve

__all__ = ["serve"]
