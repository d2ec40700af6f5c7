"""Sessions that end, with their jobs: ending sessions now, and suspending one whose jobs
abort the runtime.

Here and not in sessions because a session that ends takes its jobs with it (queued ones
cancelled, running ones failed, their ciphertexts and results erased), and jobs sit above
sessions. Each function is one state change writing its own audit records; the client-level
actions (rotating keys, disabling a client, the expiry sweep) in actions.services, the REST
API and the worker's task call these.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from base import audit, blobs
from base.audit import Actor
from jobs import services as job_services
from sessions.models import KeySession
from sessions.status import ENDED

logger = logging.getLogger(__name__)


def end_session(session: KeySession, status: str, actor: Actor, reason: str) -> bool:
    """End one active session now; False when it had already ended (ending it again changes nothing)."""
    ended = _end_batch([session.pk], status, actor, reason) == 1
    session.refresh_from_db()
    return ended


def end_sessions(sessions: QuerySet[KeySession], status: str, actor: Actor, reason: str) -> int:
    """End every active session of a query now; returns how many this call ended.

    Each session's evaluation keys are erased, its queued jobs cancelled and running
    ones failed (``context_expired`` or ``context_invalidated``; a worker that
    finishes a failed job drops its output), and its jobs' ciphertexts and results
    erased. Sessions are ended in batches, each one transaction with one audit record
    per session and per stopped job, so that a sweep of thousands stays fast.
    """
    ids = list(sessions.filter(status__in=KeySession.OPEN).values_list("pk", flat=True))
    return sum(_end_batch(ids[i : i + BATCH], status, actor, reason) for i in range(0, len(ids), BATCH))


BATCH = 500


def _end_batch(ids: list[uuid.UUID], status: str, actor: Actor, reason: str) -> int:
    with transaction.atomic():
        locked = list(
            KeySession.objects.select_for_update(of=("self",))
            .filter(pk__in=ids, status__in=KeySession.OPEN)
            .select_related("client")
        )
        if not locked:
            return 0
        pks = [session.pk for session in locked]
        KeySession.objects.filter(pk__in=pks).update(
            status=status, ended_at=timezone.now(), end_reason=reason, keys_blob=""
        )
        # Erased inside the transaction: if anything below fails, the keys are gone
        # anyway, which is the safe direction for a secret-adjacent artefact.
        for session in locked:
            blobs.delete(session.keys_blob)
        audit.record_many(
            [
                audit.Entry(actor, f"session.{status}", "session", s.pk, reason, {"client": s.client.name})
                for s in locked
            ]
        )
        job_services.stop_for_sessions_end(pks, ENDED[KeySession.Status(status)].code, actor)
        job_services.erase_blobs_of_sessions(pks)
    logger.info("sessions ended", extra={"sessions": len(locked), "status": status})
    return len(locked)


def count_circuit_abort(session_id: uuid.UUID, actor: Actor) -> bool:
    """Count a job of this session that aborted the runtime; suspend the session at the limit.

    Each abort replaces a pool process and throws away every other tenant's warm keys
    held there, so a session cannot abort the runtime for free: after
    MOAI_MAX_CIRCUIT_ABORTS its queued jobs are cancelled (``context_suspended``), new
    ones are refused, and it stays so until staff lift it. True when this call suspended it.
    """
    with transaction.atomic():
        KeySession.objects.filter(pk=session_id).update(circuit_aborts=F("circuit_aborts") + 1)
        session = KeySession.objects.select_for_update().get(pk=session_id)
        if session.status != KeySession.Status.ACTIVE or session.circuit_aborts < settings.MOAI_MAX_CIRCUIT_ABORTS:
            return False
        KeySession.objects.filter(pk=session_id).update(status=KeySession.Status.SUSPENDED)
        aborts = session.circuit_aborts
        audit.record(
            actor, "session.suspended", "session", session_id, f"{aborts} jobs aborted the runtime", aborts=aborts
        )
        job_services.stop_for_sessions_end([session_id], ENDED[KeySession.Status.SUSPENDED].code, actor)
    logger.warning("session suspended", extra={"context_id": str(session_id), "aborts": session.circuit_aborts})
    return True
