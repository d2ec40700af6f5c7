"""What is waiting, running and failing, per model: read from the job table, the source of truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from jobs.models import Job


@dataclass(frozen=True)
class ModelQueue:
    model: str
    queued: int
    running: int
    failed_last_hour: int
    oldest_queued_seconds: float | None


def queue_status() -> list[ModelQueue]:
    now = timezone.now()
    hour_ago = now - timedelta(hours=1)
    rows = (
        Job.objects.values("model_version__name")
        .annotate(
            queued=Count("pk", filter=Q(status=Job.Status.QUEUED)),
            running=Count("pk", filter=Q(status=Job.Status.RUNNING)),
            failed=Count("pk", filter=Q(status=Job.Status.FAILED, finished_at__gte=hour_ago)),
            oldest=Min("submitted_at", filter=Q(status=Job.Status.QUEUED)),
        )
        .order_by("model_version__name")
    )
    return [
        ModelQueue(
            model=row["model_version__name"],
            queued=row["queued"],
            running=row["running"],
            failed_last_hour=row["failed"],
            oldest_queued_seconds=round((now - row["oldest"]).total_seconds(), 1) if row["oldest"] else None,
        )
        for row in rows
        if row["queued"] or row["running"] or row["failed"]
    ]


def as_dicts(rows: list[ModelQueue]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
