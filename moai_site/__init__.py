"""Project package: settings, URLs, the Celery app and WSGI (gunicorn's config is ./gunicorn.conf.py)."""

from base import exit_status

# Every Django process (web, worker, beat, manage.py, pytest) imports this package first.
exit_status.install()

from moai_site.celery import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
