"""Recovering jobs the broker or a worker lost. The job row is the truth; this sweep makes it so.

- A running job whose worker stopped sending heartbeats (the whole worker died:
  node preempted, SIGKILL, out of memory) goes back to the queue, up to
  ``MOAI_JOB_MAX_ATTEMPTS`` attempts; after that it fails with ``worker_lost``.
  Heartbeats come from the worker's parent process, which a long circuit in a
  pool process does not block.
- A queued job that is no longer in the broker (Redis restarted without its data,
  or flushed) is sent again. Sending a job twice is harmless: only one claim wins.

Celery beat runs this every 15 seconds; ``manage.py recover_jobs`` runs it once.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from base.audit import Actor
from jobs import services
from jobs.models import Job

logger = logging.getLogger(__name__)
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Recovered:
    requeued: int
    failed: int
    resent: int


def recover_jobs(actor: Actor | None = None) -> Recovered:
    actor = actor or Actor.system("recovery")
    requeued, failed = _reclaim_stale_running(actor)
    resent = _resend_lost_queued()
    if requeued or failed or resent:
        logger.warning("jobs recovered", extra={"requeued": requeued, "failed": failed, "resent": resent})
    return Recovered(requeued, failed, resent)


def _reclaim_stale_running(actor: Actor) -> tuple[int, int]:
    cutoff = timezone.now() - timedelta(seconds=settings.MOAI_JOB_LEASE_SECONDS)
    requeued = failed = 0
    for job in Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=cutoff):
        if job.attempts >= settings.MOAI_JOB_MAX_ATTEMPTS:
            failed += services.fail_job(
                str(job.pk), "worker_lost", f"The worker running this job was lost {job.attempts} time(s).", actor,
                attempt=job.attempts,
            )  # fmt: skip
            continue
        moved = services.requeue_job(job, actor, "its worker stopped sending heartbeats")
        requeued += moved
    return requeued, failed


def _resend_lost_queued() -> int:
    cutoff = timezone.now() - timedelta(seconds=settings.MOAI_REQUEUE_GRACE_SECONDS)
    waiting = list(
        Job.objects.filter(status=Job.Status.QUEUED, submitted_at__lt=cutoff).values_list("pk", "enqueued_at")
    )
    stale = [pk for pk, enqueued in waiting if enqueued is None or enqueued < cutoff]
    if not stale:
        return 0
    in_broker = broker_job_ids()
    lost = [pk for pk in stale if str(pk).encode() not in in_broker]
    for pk in lost:
        services.enqueue(pk)
    Job.objects.filter(pk__in=lost).update(enqueued_at=timezone.now())
    return len(lost)


def broker_job_ids() -> set[bytes]:
    """Ids of the jobs whose turns wait in the broker.

    A turn delivered to a worker is no longer in Redis (moai_site.settings keeps no copy of
    delivered messages): until its job is claimed it counts as missing, and a sweep in that
    moment sends one more turn, which is harmless (only one claim wins).
    """
    found: set[bytes] = set()
    for raw in _broker_messages():
        found.update(UUID.findall(raw))
        # Message bodies are base64 inside the JSON envelope; the ids are in there too.
        for chunk in re.findall(rb'"body": ?"([A-Za-z0-9+/=]+)"', raw):
            try:
                found.update(UUID.findall(base64.b64decode(chunk)))
            except ValueError:
                continue
    return found


def _broker_messages() -> list[bytes]:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    if settings.REDIS_URL:
        from base.redis_client import shared_redis

        client = shared_redis()
        raw = client.lrange(queue, 0, -1)
        return [item if isinstance(item, bytes) else str(item).encode() for item in raw]
    folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
    return [path.read_bytes() for path in folder.glob("*") if path.is_file()]
