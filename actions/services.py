"""Actions that cross layers, and nothing else: ending sessions (which stops their jobs and
erases their keys and ciphertexts), suspending a session whose jobs abort the runtime,
rotating a client's keys and disabling a client (which end its sessions).

Each is one function writing its own audit records; views, the admin, management commands
and Celery tasks call these, never the pieces below them one by one. Nothing below this
module imports it (tests/test_layers.py).
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from base import audit, blobs, rules
from base.audit import Actor
from jobs import services as job_services
from keys.models import ApiClient
from sessions import services as session_services
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


def end_selected_sessions(
    sessions: QuerySet[KeySession], scope: str, status: str, actor: Actor, reason: str
) -> tuple[int, int]:
    """An operator's incident action over a selection: end its active sessions; (matched, ended).

    Writes one record for the action itself, whatever it matched, besides one per ended
    session: the audit log must show that the response was carried out even when the
    selection held no open session.
    """
    reason = rules.reason(reason)
    with transaction.atomic():
        matched = sessions.count()
        ended = end_sessions(sessions, status, actor, reason)
        audit.record(actor, f"sessions.{status}", "selection", scope, reason, matched=matched, ended=ended)
    return matched, ended


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


def expire_due_sessions(actor: Actor | None = None) -> int:
    """End every active session whose TTL has passed; returns how many were ended."""
    due = KeySession.objects.filter(expires_at__lte=timezone.now())
    return end_sessions(due, KeySession.Status.EXPIRED, actor or Actor.system("expiry"), "TTL passed")


def sweep(actor: Actor | None = None) -> tuple[int, int, int]:
    """The periodic sweep: expire lapsed sessions, erase results past their retention, remove orphaned keys."""
    expired = expire_due_sessions(actor)
    purged = job_services.purge_expired_results(settings.MOAI_RESULT_RETENTION_SECONDS)
    orphans = session_services.remove_orphaned_keys(actor)
    return expired, purged, orphans


def ensure_current(session: KeySession) -> KeySession:
    """Expire a session at request time once its TTL has passed, before the sweeper gets to it."""
    if session.has_lapsed(timezone.now()):
        end_session(session, KeySession.Status.EXPIRED, Actor.system("expiry"), "TTL passed")
    return session


def rotate_client_keys(client: ApiClient, actor: Actor, reason: str) -> int:
    """End all of a client's sessions and refuse the evaluation keys they used: the next session needs new keys.

    Returns how many sessions were ended. Rotating again is harmless.
    """
    reason = rules.reason(reason)
    with transaction.atomic():
        ApiClient.objects.filter(pk=client.pk).update(keys_rotated_at=timezone.now())
        ended = end_sessions(client.sessions.all(), KeySession.Status.INVALIDATED, actor, f"keys rotated: {reason}")
        audit.record(actor, "client.keys_rotated", "client", client.name, reason, sessions_ended=ended)
    client.refresh_from_db()
    return ended


def set_client_active(client: ApiClient, active: bool, actor: Actor, reason: str) -> bool:
    """Enable or disable a client; disabling also ends its sessions. False when nothing changed."""
    reason = rules.reason(reason)
    with transaction.atomic():
        changed = ApiClient.objects.filter(pk=client.pk, is_active=not active).update(is_active=active)
        ended = 0
        if not active:
            ended = end_sessions(
                client.sessions.all(), KeySession.Status.INVALIDATED, actor, f"client disabled: {reason}"
            )
        # Recorded even when the client already was in that state: the operator's action happened.
        audit.record(
            actor, "client.enabled" if active else "client.disabled", "client", client.name, reason,
            changed=bool(changed), sessions_ended=ended,
        )  # fmt: skip
    client.refresh_from_db()
    return bool(changed)
