"""State changes of key sessions. Each function writes its own audit record.

The API's ``DELETE /sessions/{id}``, the operator commands, Celery beat and the
admin all end sessions through :func:`end_session`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from inference import blobs
from inference.models import Job, ModelVersion
from keys.evaluation_keys import check_evaluation_keys, fingerprint
from keys.models import ApiClient
from ops import audit
from ops.audit import Actor
from sessions.models import KeySession

logger = logging.getLogger(__name__)


def open_session(client: ApiClient, model_version: ModelVersion, keys_path: Path, actor: Actor) -> KeySession:
    """Check uploaded evaluation keys and open a session holding them.

    Raises :class:`keys.evaluation_keys.KeyCheckError` (nothing is stored then).
    """
    check_evaluation_keys(keys_path, model_version.evaluation_keys_bytes)
    now = timezone.now()
    session = KeySession(
        client=client,
        model_version=model_version,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MOAI_SESSION_TTL_SECONDS),
    )
    with keys_path.open("rb") as handle:
        session.key_fingerprint = fingerprint(handle)
        session.keys_blob = blobs.save(f"keys/{session.id}.bin", File(handle))
    try:
        with transaction.atomic():
            session.save()
            audit.record(
                actor,
                "session.created",
                "session",
                session.id,
                model=model_version.name,
                model_version=model_version.version,
                key_fingerprint=session.key_fingerprint,
            )
    except BaseException:
        blobs.delete(session.keys_blob)
        raise
    logger.info("session opened", extra={"context_id": str(session.id), "client": client.name})
    return session


def end_session(session: KeySession, status: str, actor: Actor, reason: str) -> bool:
    """End an active session now: erase its keys and cancel its queued jobs.

    Returns False when the session had already ended (ending it again changes nothing).
    """
    with transaction.atomic():
        locked = KeySession.objects.select_for_update().get(pk=session.pk)
        if locked.status != KeySession.Status.ACTIVE:
            return False
        locked.status = status
        locked.ended_at = timezone.now()
        locked.end_reason = reason
        keys_blob, locked.keys_blob = locked.keys_blob, ""
        locked.save(update_fields=["status", "ended_at", "end_reason", "keys_blob"])
        # Erased inside the transaction: if anything below fails, the keys are gone
        # anyway, which is the safe direction for a secret-adjacent artefact.
        blobs.delete(keys_blob)
        audit.record(actor, f"session.{status}", "session", locked.id, reason)
        code = "context_expired" if status == KeySession.Status.EXPIRED else "context_invalidated"
        for job in Job.objects.filter(session=locked, status=Job.Status.QUEUED):
            _cancel_for_session_end(job, code, actor)
    session.refresh_from_db()
    logger.info("session ended", extra={"context_id": str(session.id), "status": status})
    return True


def _cancel_for_session_end(job: Job, code: str, actor: Actor) -> None:
    updated = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
        status=Job.Status.CANCELLED,
        finished_at=timezone.now(),
        error_code=code,
        error_message="The session ended before the job ran.",
    )
    if updated:
        audit.record(actor, "job.cancelled", "job", job.id, "session ended", error_code=code)


def expire_due_sessions(actor: Actor | None = None) -> int:
    """End every active session whose TTL has passed; returns how many were ended."""
    actor = actor or Actor.system("expiry")
    ended = 0
    due = KeySession.objects.filter(status=KeySession.Status.ACTIVE, expires_at__lte=timezone.now())
    for session in due.iterator():
        ended += end_session(session, KeySession.Status.EXPIRED, actor, "TTL passed")
    return ended


def ensure_current(session: KeySession) -> KeySession:
    """Expire a session at request time once its TTL has passed, before the sweeper gets to it."""
    if session.has_lapsed(timezone.now()):
        end_session(session, KeySession.Status.EXPIRED, Actor.system("expiry"), "TTL passed")
    return session
