"""State changes of key sessions that stay within sessions: opening one, lifting a suspension.
Each function writes its own audit record.

Ending sessions also stops their jobs, a layer above: that is in jobs.ending.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from base import audit, blobs, notify, rules
from base.audit import Actor
from base.uploads import Spooled
from keys.evaluation_keys import (
    NEAR_DUPLICATE_SHARE,
    KeyCheckError,
    check_declared_size,
    check_uploaded_keys,
    fingerprints_of,
    shared_share,
)
from keys.models import ApiClient
from registry.models import ModelVersion
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
    if needs_warm_up(session):
        # After commit: a pool process that hears of the session must find its row, and the
        # notice must not announce keys whose opening was rolled back.
        announce = partial(
            notify.announce_session,
            str(session.id),
            session.keys_blob,
            session.model_version_id,
            session.expires_at.timestamp(),
        )
        transaction.on_commit(announce)
    logger.info("session opened", extra={"context_id": str(session.id), "client": client.name})
    return session


def needs_warm_up(session: KeySession) -> bool:
    """False for a session that uploaded its version's constant keys (the digest says they are
    those very bytes): every pool process holds them warm from the moment it loads the circuit
    (jobs.warmup), so there is nothing to announce and nothing for the opening to wait for."""
    return not session.model_version.kept_constant_keys(session.key_fingerprint)


def keys_warm_at_opening(session: KeySession) -> bool:
    """Hold an opening's answer (at most ``MOAI_SESSION_WARMUP_WAIT_SECONDS``) until every pool
    process has warmed the session's keys, so that the first job does not pay for their
    decompression (jobs.warmup); whether they are warm (the answer's ``keys_warm``).

    - Its version's constant keys (a linear model's): nothing to wait for; every pool process
      has held them warm since it loaded the circuit.
    - A version whose warm-up run costs more than the first use it saves (a long circuit's,
      ModelVersion.warms_keys_ahead): nothing to wait for, and not warm. The pool processes
      deserialize the keys ahead, and the first job decompresses them.
    """
    if not needs_warm_up(session):
        return True
    if not session.model_version.warms_keys_ahead:
        return False
    return notify.wait_until_warmed(str(session.id), settings.MOAI_SESSION_WARMUP_WAIT_SECONDS)


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


def keys_were_revoked(client: ApiClient, model_version: ModelVersion, fingerprint: str, chunks: bytes) -> bool:
    """True for evaluation keys a session of this client used before its keys were rotated, or a near copy.

    A near copy (NEAR_DUPLICATE_SHARE of its chunks in place) is refused too: with a bit
    flipped the bytes hash differently, but the keys still belong to the old secret key.
    """
    if client.keys_rotated_at is None:
        return False
    revoked = client.sessions.filter(created_at__lt=client.keys_rotated_at)
    if revoked.filter(key_fingerprint=fingerprint).exists():
        return True
    same_model = revoked.filter(model_version=model_version).exclude(key_chunks=b"")
    return any(
        shared_share(chunks, bytes(old)) >= NEAR_DUPLICATE_SHARE
        for old in same_model.values_list("key_chunks", flat=True).iterator()
    )


# Key blobs looked up against the sessions table per query.
ORPHAN_BATCH = 500


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
    for start in range(0, len(old), ORPHAN_BATCH):
        names = old[start : start + ORPHAN_BATCH]
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
