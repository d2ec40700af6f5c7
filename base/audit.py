"""Writing and checking the audit log.

:func:`record` is called by every state-changing service function, inside that
function's transaction, so a change and its record commit or roll back together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from base.models import AuditRecord
from base.statements import Insert, Statement

GENESIS = "0" * 64
# Any constant works; it only has to be the same in every process.
_ADVISORY_LOCK_ID = 0x4D4F4149


@dataclass(frozen=True)
class Actor:
    """Who caused a state change, and from where."""

    kind: str
    name: str
    source: str = ""

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(AuditRecord.ActorKind.SYSTEM, name)

    @classmethod
    def operator(cls, command: str) -> Actor:
        """A person running ``manage.py COMMAND`` on a host: recorded as the system, with who and where."""
        import getpass
        import socket

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(AuditRecord.ActorKind.SYSTEM, f"manage.py {command} ({user})", socket.gethostname())

    @classmethod
    def client(cls, name: str, source: str = "") -> Actor:
        return cls(AuditRecord.ActorKind.CLIENT, name, source)

    @classmethod
    def staff(cls, username: str, source: str = "") -> Actor:
        return cls(AuditRecord.ActorKind.STAFF, username, source)


@dataclass(frozen=True)
class AuditKey:
    """An HMAC key of the chain and its id, which records carry so that the key can change mid-chain."""

    id: str
    secret: bytes

    @classmethod
    def of(cls, secret: str) -> AuditKey:
        raw = secret.encode()
        # A fingerprint, not a name the operator chooses: the same key always has the same id,
        # and the id tells nothing about the key.
        return cls(hashlib.sha256(b"moai-audit-key-id:" + raw).hexdigest()[:16], raw)


def signing_key() -> AuditKey:
    """The key new records and checkpoints are signed with (``MOAI_AUDIT_KEY``)."""
    return AuditKey.of(settings.MOAI_AUDIT_KEY)


def keyring() -> dict[str, AuditKey]:
    """Every key a record may be signed with: the current one and those rotated out."""
    keys = [AuditKey.of(secret) for secret in [settings.MOAI_AUDIT_KEY, *settings.MOAI_AUDIT_PREVIOUS_KEYS]]
    return {key.id: key for key in keys}


def compute_digest(key: AuditKey, prev_digest: str, content: dict[str, Any]) -> str:
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key.secret, (prev_digest + payload).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One audit record to write."""

    actor: Actor
    action: str
    target_type: str
    target_id: object
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def record(
    actor: Actor,
    action: str,
    target_type: str,
    target_id: object,
    reason: str = "",
    **details: Any,
) -> AuditRecord:
    return record_many([Entry(actor, action, target_type, target_id, reason, details)])[0]


def _chain_head() -> QuerySet[AuditRecord]:
    return AuditRecord.objects.order_by("-seq").only("seq", "digest")[:1]


# Read on every audited state change without PostgreSQL's function: compiled once per thread
# (base.statements).
_CHAIN_HEAD = Statement(_chain_head)
# Written on every audited state change (one row, most of the time): its SQL built once per thread.
_RECORD_ROWS = Insert(AuditRecord)


def _locked_chain_head() -> tuple[int, str]:
    """The last committed record's number and digest, read under the chain's lock (held to commit).

    Two writers must not both read the same predecessor. SQLite runs write transactions
    one at a time already (IMMEDIATE mode); PostgreSQL needs a lock, which a function of
    migration 0006 takes before it reads, in one round trip.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT seq, digest FROM moai_audit_chain_head(%s)", [_ADVISORY_LOCK_ID])
            row = cursor.fetchone()
        return (row[0], row[1]) if row is not None else (0, GENESIS)
    last = _CHAIN_HEAD.first()
    return (last.seq, last.digest) if last is not None else (0, GENESIS)


def record_many(entries: list[Entry]) -> list[AuditRecord]:
    """Append records in order, chained, in one insert (bulk state changes write one record each).

    Inside the caller's transaction (the state change being recorded) no savepoint is
    taken: an audit write that fails must undo that change anyway, and a savepoint
    costs two database round trips per record.
    """
    key = signing_key()
    with transaction.atomic(savepoint=False):
        # Under the lock and in READ COMMITTED, this sees every committed record: the next
        # number follows the last committed one, so a writer that rolled back leaves no gap.
        seq, prev = _locked_chain_head()
        now = timezone.now()
        rows = []
        for entry in entries:
            seq += 1
            row = AuditRecord(
                seq=seq,
                at=now,
                actor_kind=entry.actor.kind,
                actor=entry.actor.name,
                action=entry.action,
                target_type=entry.target_type,
                target_id=str(entry.target_id),
                reason=entry.reason,
                source=entry.actor.source,
                details=entry.details,
                key_id=key.id,
                prev_digest=prev,
            )
            row.digest = prev = compute_digest(key, row.prev_digest, row.content())
            rows.append(row)
        _RECORD_ROWS.rows(rows)
        if rows:
            from base import audit_checkpoints

            head_now = audit_checkpoints.Head(seq, prev, now)
            # Published only once the records are committed: a checkpoint of a write that
            # rolled back would name a record that never existed.
            transaction.on_commit(lambda: audit_checkpoints.publish(head_now))
        return rows


@dataclass(frozen=True)
class ChainFault:
    seq: int
    problem: str


def verify_chain(records: Iterable[AuditRecord], keys: dict[str, AuditKey] | None = None) -> ChainFault | None:
    """Return the first record (by sequence number) that breaks the chain, or None when it is whole.

    ``records`` must come in sequence order. A missing number is named itself, so a record
    deleted in the middle is reported as the number that is missing.
    """
    keys = keyring() if keys is None else keys
    expected_seq, expected_prev = 1, GENESIS
    for entry in records:
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                return ChainFault(expected_seq, "is missing (a record was deleted)")
            return ChainFault(entry.seq, "appears twice or out of order")
        if entry.prev_digest != expected_prev:
            return ChainFault(
                entry.seq, "does not follow its predecessor (a record was deleted, inserted or reordered)"
            )
        key = keys.get(entry.key_id)
        if key is None:
            return ChainFault(entry.seq, f"is signed with an unknown audit key (key id {entry.key_id!r})")
        if not hmac.compare_digest(entry.digest, compute_digest(key, entry.prev_digest, entry.content())):
            return ChainFault(entry.seq, "content does not match its digest (the record was altered or forged)")
        expected_seq, expected_prev = expected_seq + 1, entry.digest
    return None
