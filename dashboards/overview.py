"""The admin overview: the service's state at a glance, from the job and session tables.

Charts are SVG drawn here on the server: no charting library, no CDN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from jobs.models import Job
from sessions.models import KeySession

HOURS = 24
WIDTH, HEIGHT, PAD = 720, 200, 36


@dataclass(frozen=True)
class Hour:
    start: datetime
    finished: int
    failed: int
    p50: float | None
    p95: float | None
    p99: float | None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


def hourly(now: datetime) -> list[Hour]:
    start = (now - timedelta(hours=HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    rows = Job.objects.filter(finished_at__gte=start, status__in=[Job.Status.SUCCEEDED, Job.Status.FAILED]).values_list(
        "status", "submitted_at", "finished_at"
    )
    buckets: dict[int, list[tuple[str, float]]] = {i: [] for i in range(HOURS)}
    for status, submitted, finished in rows:
        if finished is None:
            continue
        index = int((finished - start).total_seconds() // 3600)
        if 0 <= index < HOURS:
            buckets[index].append((status, (finished - submitted).total_seconds() * 1000))
    hours = []
    for index in range(HOURS):
        latencies = [ms for _, ms in buckets[index]]
        hours.append(
            Hour(
                start=start + timedelta(hours=index),
                finished=len(latencies),
                failed=sum(1 for status, _ in buckets[index] if status == Job.Status.FAILED),
                p50=_percentile(latencies, 0.50),
                p95=_percentile(latencies, 0.95),
                p99=_percentile(latencies, 0.99),
            )
        )
    return hours


def overview_context() -> dict[str, Any]:
    now = timezone.now()
    hours = hourly(now)
    oldest = (
        Job.objects.filter(status=Job.Status.QUEUED).order_by("submitted_at").values_list("submitted_at", flat=True)
    )
    oldest_at = oldest.first()
    return {
        "queued": Job.objects.filter(status=Job.Status.QUEUED).count(),
        "running": Job.objects.filter(status=Job.Status.RUNNING).count(),
        "active_sessions": KeySession.objects.filter(status=KeySession.Status.ACTIVE).count(),
        "failed_last_hour": Job.objects.filter(
            status=Job.Status.FAILED, finished_at__gte=now - timedelta(hours=1)
        ).count(),
        "oldest_queued_seconds": int((now - oldest_at).total_seconds()) if oldest_at else None,
        # No jobs in the window: a sentence, not a chart of empty axes that reads like "all fine".
        "any_jobs": any(h.finished for h in hours),
        "failures_chart": bar_chart([h.failed for h in hours], [h.start for h in hours], "failed jobs per hour"),
        "latency_chart": latency_chart(hours),
        "hours": hours,
    }


def _x(index: int, count: int) -> float:
    return PAD + index * (WIDTH - 2 * PAD) / max(1, count - 1)


def _axis(labels: list[datetime], top: float, title: str) -> str:
    parts = [
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
        f'<text x="{PAD}" y="14" font-size="12" fill="#333">{title} (max {top:g})</text>',
    ]
    for index, label in enumerate(labels):
        if index % 4 == 0:
            parts.append(
                f'<text x="{_x(index, len(labels)):.1f}" y="{HEIGHT - PAD + 16}" font-size="10" '
                f'text-anchor="middle" fill="#555">{label:%H:%M}</text>'
            )
    return "".join(parts)


def bar_chart(values: list[int], labels: list[datetime], title: str) -> SafeString:
    top = max([*values, 1])
    slot = (WIDTH - 2 * PAD) / len(values)
    bars = []
    for index, value in enumerate(values):
        height = (HEIGHT - 2 * PAD) * value / top
        bars.append(
            f'<rect x="{PAD + index * slot + 1:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{slot - 2:.1f}" '
            f'height="{height:.1f}" fill="#ba2121"><title>{value}</title></rect>'
        )
    # Every value interpolated is a number or a formatted time: nothing from users.
    return mark_safe(f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{"".join(bars)}{_axis(labels, top, title)}</svg>')


def latency_chart(hours: list[Hour]) -> SafeString:
    series = {"p50": "#417690", "p95": "#e0a000", "p99": "#ba2121"}
    values = [v for h in hours for v in (h.p50, h.p95, h.p99) if v is not None]
    top = max([*values, 5000.0]) * 1.1

    def y(ms: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * ms / top

    parts = [
        f'<line x1="{PAD}" y1="{y(5000):.1f}" x2="{WIDTH - PAD}" y2="{y(5000):.1f}" stroke="#ba2121" '
        f'stroke-dasharray="6 4"/><text x="{WIDTH - PAD}" y="{y(5000) - 4:.1f}" font-size="10" '
        f'text-anchor="end" fill="#ba2121">5000 ms alert</text>'
    ]
    for name, colour in series.items():
        points = [
            f"{_x(i, len(hours)):.1f},{y(getattr(h, name)):.1f}"
            for i, h in enumerate(hours)
            if getattr(h, name) is not None
        ]
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>')
    legend = "".join(
        f'<text x="{WIDTH - PAD - 150 + i * 50}" y="14" font-size="12" fill="{c}">{n}</text>'
        for i, (n, c) in enumerate(series.items())
    )
    axis = _axis([h.start for h in hours], round(top), "job latency, ms")
    return mark_safe(f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{"".join(parts)}{legend}{axis}</svg>')
