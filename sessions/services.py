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
from django.db.models import QuerySet
from django.utils import timezone

from inference import blobs
from inference import services as job_services
from inference.models import Job, ModelVersion
from keys.evaluation_keys import KeyCheckError, check_evaluation_keys, fingerprint
from keys.models import ApiClient
from keys.services import keys_were_revoked
from ops import audit
from ops.audit import Actor
from sessions.models import KeySession

logger = logging.getLogger(__name__)


class SessionLimitError(Exception):
    """The client already holds as many active sessions as it may."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"at most {limit} active sessions per client")
        self.limit = limit
        self.retry_after = retry_after


def open_session(client: ApiClient, model_version: ModelVersion, keys_path: Path, actor: Actor) -> KeySession:
    """Check uploaded evaluation keys and open a session holding them.

    Raises :class:`KeyCheckError` for keys that are not this model's evaluation keys
    (audited, nothing stored) and :class:`SessionLimitError` over the per-client cap.
    """
    _check_session_cap(client)
    try:
        check_evaluation_keys(keys_path, model_version.evaluation_keys_bytes)
        with keys_path.open("rb") as handle:
            key_fingerprint = fingerprint(handle)
        if not model_version.evaluation_keys_constant and keys_were_revoked(client, key_fingerprint):
            raise KeyCheckError(
                "invalid_evaluation_keys", "These keys were revoked by a key rotation; generate new keys.", revoked=1
            )
    except KeyCheckError as exc:
        audit.record(
            actor,
            "session.refused",
            "model",
            f"{model_version.name}:v{model_version.version}",
            str(exc),
            error_code=exc.code,
            bytes=keys_path.stat().st_size,
        )
        raise
    now = timezone.now()
    session = KeySession(
        client=client,
        model_version=model_version,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MOAI_SESSION_TTL_SECONDS),
        key_fingerprint=key_fingerprint,
    )
    with keys_path.open("rb") as handle:
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


def _check_session_cap(client: ApiClient) -> None:
    limit = settings.MOAI_MAX_ACTIVE_SESSIONS_PER_CLIENT
    active = KeySession.objects.filter(client=client, status=KeySession.Status.ACTIVE).order_by("expires_at")
    if active.count() >= limit:
        first_end = active.values_list("expires_at", flat=True).first()
        wait = int((first_end - timezone.now()).total_seconds()) + 1 if first_end else 60
        raise SessionLimitError(limit, max(1, wait))


def end_session(session: KeySession, status: str, actor: Actor, reason: str) -> bool:
    """End an active session now: erase its keys, stop its jobs, erase their ciphertexts and results.

    Queued jobs are cancelled and running ones failed, both with ``context_expired``
    or ``context_invalidated``; a worker that finishes a failed job drops its output.
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
        audit.record(actor, f"session.{status}", "session", locked.id, reason, client=locked.client.name)
        code = "context_expired" if status == KeySession.Status.EXPIRED else "context_invalidated"
        for job in Job.objects.filter(session=locked).exclude(status__in=Job.FINISHED):
            job_services.stop_for_session_end(job, code, actor)
        for job in Job.objects.filter(session=locked, blobs_erased=False):
            job_services.erase_blobs(job)
    session.refresh_from_db()
    logger.info("session ended", extra={"context_id": str(session.id), "status": status})
    return True


def end_sessions(sessions: QuerySet[KeySession], status: str, actor: Actor, reason: str) -> int:
    """End every active session of a query; returns how many this call ended."""
    ended = 0
    for session in sessions.filter(status=KeySession.Status.ACTIVE).select_related("client").iterator():
        ended += end_session(session, status, actor, reason)
    return ended


def expire_due_sessions(actor: Actor | None = None) -> int:
    """End every active session whose TTL has passed; returns how many were ended."""
    due = KeySession.objects.filter(expires_at__lte=timezone.now())
    return end_sessions(due, KeySession.Status.EXPIRED, actor or Actor.system("expiry"), "TTL passed")


def sweep(actor: Actor | None = None) -> tuple[int, int]:
    """The periodic sweep: expire lapsed sessions, then erase results past their retention."""
    expired = expire_due_sessions(actor)
    purged = job_services.purge_expired_results(settings.MOAI_RESULT_RETENTION_SECONDS)
    return expired, purged


def ensure_current(session: KeySession) -> KeySession:
    """Expire a session at request time once its TTL has passed, before the sweeper gets to it."""
    if session.has_lapsed(timezone.now()):
        end_session(session, KeySession.Status.EXPIRED, Actor.system("expiry"), "TTL passed")
    return session
