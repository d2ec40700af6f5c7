"""The Celery application shared by the worker and beat processes.

Configuration lives in Django settings as ``CELERY_*`` names. Nothing FHE-related
is imported here: OpenMP state must not exist in the parent before it forks its
pool processes (DESIGN.md), so the runtime is loaded lazily inside the task.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moai_site.settings")

app = Celery("moai_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
