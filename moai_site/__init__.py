"""Project package: settings, URLs, the Celery app, WSGI and the gunicorn config."""

from moai_site.celery import app as celery_app

__all__ = ["celery_app"]
