"""Liveness and readiness probes."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse


def metrics_view(request: HttpRequest) -> HttpResponse:
    """This host's web processes' metrics plus the shared-state gauges (Prometheus text format)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from dashboards.collectors import render

    return HttpResponse(render(shared_state=True), content_type=CONTENT_TYPE_LATEST)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {k: "ok" if v else "unreachable" for k, v in checks.items()},
    }
    return JsonResponse(body, status=200 if ready else 503)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _broker_ok() -> bool:
    if not settings.REDIS_URL:
        from pathlib import Path

        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", "")
        return bool(folder) and Path(str(folder)).is_dir()
    from base.redis_client import connect

    try:
        # A client of its own with a short timeout: the probe must answer before its deadline.
        return bool(connect(socket_timeout=2).ping())
    except Exception:
        return False
