"""The Stepline scenarios served by FastAPI: ``uvicorn tests.e2e.apps.stepline_fastapi_app:app``.

Configured by ``STEPLINE_DEV`` / ``STEPLINE_SIGNING_KEY``, ``STEPLINE_BASE_URL`` and
``STEPLINE_EVENT_KEY``, as any Stepline app; ``E2E_APP_ID`` names the app.
"""

from __future__ import annotations

import os

import fastapi

import stepline
import stepline.fastapi
from tests.e2e.apps.stepline_functions import make_functions

client = stepline.Stepline(app_id=os.environ.get("E2E_APP_ID", "e2e-fastapi"))
app = fastapi.FastAPI()
stepline.fastapi.serve(app, client, make_functions(client, os.environ.get("E2E_EVENT_PREFIX", "fastapi")))
