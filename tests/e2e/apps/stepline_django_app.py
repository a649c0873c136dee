"""The Stepline scenarios served by Django (a one-file project), on werkzeug's threaded server.

``python -m tests.e2e.apps.stepline_django_app PORT``. Configured as any Stepline app
(``STEPLINE_*``); ``E2E_APP_ID`` names the app.
"""

from __future__ import annotations

import os
import sys

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="e2e-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
)
django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402

import stepline  # noqa: E402 - Django must be configured before its URL helpers are used
import stepline.django  # noqa: E402
from tests.e2e.apps.stepline_functions import make_functions  # noqa: E402

client = stepline.Stepline(app_id=os.environ.get("E2E_APP_ID", "e2e-django"))
urlpatterns = [
    stepline.django.serve(
        client, make_functions(client, os.environ.get("E2E_EVENT_PREFIX", "django")), path="api/stepline"
    )
]
application = WSGIHandler()

if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(sys.argv[1]), application, threaded=True, use_reloader=False)
