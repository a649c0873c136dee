"""The one Django configuration of the test process (Django's settings are global): tests fill
``urlpatterns`` with the routes they need before they call."""

from __future__ import annotations

import django
from django.conf import settings as django_settings
from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
"""Django's URL configuration (``ROOT_URLCONF``)."""

if not django_settings.configured:
    django_settings.configure(
        ALLOWED_HOSTS=["testserver", "127.0.0.1"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="tests-only",
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        DATABASES={},
        INSTALLED_APPS=[],
    )
    django.setup()
