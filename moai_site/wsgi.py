"""WSGI entry point for gunicorn (``gunicorn moai_site.wsgi``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moai_site.settings")

application = get_wsgi_application()
