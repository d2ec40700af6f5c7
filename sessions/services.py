"""State changes of key sessions. Each function writes its own audit record.

The API's ``DELETE /sessions/{id}``, the operator commands, Celery beat and the
admin all end sessions through :func:`end_session`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from inference import blobs, notify
from inference import services as job_services
from inference.models import ModelVersion
from inference.uploads import Spooled
from keys.evaluation_keys import KeyCheckError, check_declared_size, check_uploaded_keys, fingerprints_of
from keys.models import ApiClient
from keys.services import keys_were_revoked
from ops import audit, rules
from ops.audit import Actor
from sessions.models import KeySession

logger = logging.getLogger(__name__)


class SessionLimitError(Exception):
    """The client already holds as many active sessions as it may."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"at most {limit} active sessions per client")
        self.limit = limit
        self.retry_after = retry_after


def admit_upload(client: ApiClient, model_version: ModelVersion, declared_bytes: int, actor: Actor) -> None:
    """Before a key upload's body is read: refuse it over the per-client session cap
    (:class:`SessionLimitError`) or when its declared length is not the model's key
    size (:class:`KeyCheckError`, audited), so that nothing is read or written for it."""
    _check_session_cap(client)
    try:
        check_declared_size(declared_bytes, model_version.evaluation_keys_bytes)
    except KeyCheckError as exc:
        _audit_refusal(actor, model_version, exc, declared_bytes)
        raise


def keys_blob_name(session_id: uuid.UUID) -> str:
    return f"keys/{session_id}.bin"


def open_session(
    client: ApiClient,
    model_version: ModelVersion,
    upload: Spooled,
    actor: Actor,
    session_id: uuid.UUID | None = None,
) -> KeySession:
    """Check uploaded evaluation keys and open a session holding them.

    Raises :class:`KeyCheckError` for keys that are not this model's evaluation keys
    (audited, nothing kept), :class:`SessionLimitError` over the per-client cap and
    ``CheckerBusy`` when no key checker is free (not audited: nothing was decided).
    An upload already in blob storage (``upload.blob``, streamed there under
    :func:`keys_blob_name` of ``session_id``) becomes the session's keys as it is; its
    caller removes it when this raises.
    """
    _check_session_cap(client)
    try:
        check_uploaded_keys(upload, model_version.evaluation_keys_bytes, model_version.evaluation_keys_sha256)
        chunks = b"" if model_version.evaluation_keys_constant else fingerprints_of(upload.chunks())
        if chunks and keys_were_revoked(client, model_version, upload.sha256, chunks):
            raise KeyCheckError(
                "evaluation_keys_revoked",
                "These keys, or keys nearly identical to them, were revoked by a key rotation: generate new keys.",
                revoked=1,
            )
    except KeyCheckError as exc:
        _audit_refusal(actor, model_version, exc, upload.size)
        raise
    now = timezone.now()
    session = KeySession(
        id=session_id or uuid.uuid4(),
        client=client,
        model_version=model_version,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MOAI_SESSION_TTL_SECONDS),
        key_fingerprint=upload.sha256,
        key_chunks=chunks,
    )
    if upload.blob:
        if upload.blob != keys_blob_name(session.id):
            raise ValueError(f"keys streamed to {upload.blob}, not to this session's name")
        session.keys_blob = upload.blob
    else:
        assert upload.path is not None
        session.keys_blob = blobs.save_local_file(keys_blob_name(session.id), upload.path)
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
    # After commit: a pool process that hears of the session must find its row.
    transaction.on_commit(partial(notify.announce_session, str(session.id)))
    logger.info("session opened", extra={"context_id": str(session.id), "client": client.name})
    return session


def _audit_refusal(actor: Actor, model_version: ModelVersion, exc: KeyCheckError, size: int) -> None:
    audit.record(
        actor,
        "session.refused",
        "model",
        f"{model_version.name}:v{model_version.version}",
        str(exc),
        error_code=exc.code,
        bytes=size,
    )


def _check_session_cap(client: ApiClient) -> None:
    limit = settings.MOAI_MAX_ACTIVE_SESSIONS_PER_CLIENT
    active = KeySession.objects.filter(client=client, status=KeySession.Status.ACTIVE).order_by("expires_at")
    if active.count() >= limit:
        first_end = active.values_list("expires_at", flat=True).first()
        wait = int((first_end - timezone.now()).total_seconds()) + 1 if first_end else 60
        raise SessionLimitError(limit, max(1, wait))


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
        code = "context_expired" if status == KeySession.Status.EXPIRED else "context_invalidated"
        job_services.stop_for_sessions_end(pks, code, actor)
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
        job_services.stop_for_sessions_end([session_id], "context_suspended", actor)
    logger.warning("session suspended", extra={"context_id": str(session_id), "aborts": session.circuit_aborts})
    return True


def lift_suspension(session: KeySession, actor: Actor, reason: str) -> bool:
    """Let a suspended session run jobs again, its abort count back at 0; False if it was not suspended."""
    reason = rules.reason(reason)
    with transaction.atomic():
        lifted = KeySession.objects.filter(pk=session.pk, status=KeySession.Status.SUSPENDED).update(
            status=KeySession.Status.ACTIVE, circuit_aborts=0
        )
        if lifted:
            audit.record(actor, "session.suspension_lifted", "session", session.pk, reason)
    session.refresh_from_db()
    return bool(lifted)


def expire_due_sessions(actor: Actor | None = None) -> int:
    """End every active session whose TTL has passed; returns how many were ended."""
    due = KeySession.objects.filter(expires_at__lte=timezone.now())
    return end_sessions(due, KeySession.Status.EXPIRED, actor or Actor.system("expiry"), "TTL passed")


def sweep(actor: Actor | None = None) -> tuple[int, int, int]:
    """The periodic sweep: expire lapsed sessions, erase results past their retention, remove orphaned keys."""
    expired = expire_due_sessions(actor)
    purged = job_services.purge_expired_results(settings.MOAI_RESULT_RETENTION_SECONDS)
    orphans = remove_orphaned_keys(actor)
    return expired, purged, orphans


def remove_orphaned_keys(actor: Actor | None = None) -> int:
    """Abort key uploads and delete key blobs that no open session holds, once older than
    ``MOAI_ORPHAN_KEYS_SECONDS``; returns how many, each audited.

    They are what a web process leaves when it dies (or the store goes away) between
    receiving keys and committing their session, or a store that failed a session's
    erasure: keys of no session, kept nowhere else, that nobody would ever delete. The
    age bound spares uploads in flight: keys are stored before their checks end and their
    session row exists, and that takes at most the upload plus MOAI_KEY_CHECK_SECONDS.
    """
    actor = actor or Actor.system("expiry")
    before = timezone.now() - timedelta(seconds=settings.MOAI_ORPHAN_KEYS_SECONDS)
    entries: list[audit.Entry] = []
    for name, upload_id in list(blobs.unfinished_uploads("keys/", before)):
        blobs.abort_upload(name, upload_id)
        entries.append(audit.Entry(actor, "keys.upload_aborted", "blob", name, "no session: upload never finished"))
    old = list(blobs.stored_before("keys/", before))
    for start in range(0, len(old), BATCH):
        names = old[start : start + BATCH]
        held = set(
            KeySession.objects.filter(keys_blob__in=names, status__in=KeySession.OPEN).values_list(
                "keys_blob", flat=True
            )
        )
        for name in names:
            if name not in held:
                blobs.delete(name)
                entries.append(audit.Entry(actor, "keys.orphan_deleted", "blob", name, "no open session holds it"))
    if entries:
        audit.record_many(entries)
        logger.warning("orphaned keys removed", extra={"blobs": len(entries)})
    return len(entries)


def ensure_current(session: KeySession) -> KeySession:
    """Expire a session at request time once its TTL has passed, before the sweeper gets to it."""
    if session.has_lapsed(timezone.now()):
        end_session(session, KeySession.Status.EXPIRED, Actor.system("expiry"), "TTL passed")
    return session
