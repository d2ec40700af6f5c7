"""Writing and checking the audit log.

:func:`record` is called by every state-changing service function, inside that
function's transaction, so a change and its record commit or roll back together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ops.models import AuditRecord

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


def _key() -> bytes:
    return hashlib.sha256(b"moai-audit:" + settings.SECRET_KEY.encode()).digest()


def compute_digest(prev_digest: str, content: dict[str, Any]) -> str:
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(_key(), (prev_digest + payload).encode(), hashlib.sha256).hexdigest()


def _lock_chain() -> None:
    # Two writers must not both read the same predecessor. SQLite runs write
    # transactions one at a time already (IMMEDIATE mode); PostgreSQL needs a lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_ID])


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


def record_many(entries: list[Entry]) -> list[AuditRecord]:
    """Append records in order, chained, in one insert (bulk state changes write one record each).

    Inside the caller's transaction (the state change being recorded) no savepoint is
    taken: an audit write that fails must undo that change anyway, and a savepoint
    costs two database round trips per record.
    """
    with transaction.atomic(savepoint=False):
        _lock_chain()
        prev = AuditRecord.objects.order_by("-id").values_list("digest", flat=True).first() or GENESIS
        now = timezone.now()
        rows = []
        for entry in entries:
            row = AuditRecord(
                at=now,
                actor_kind=entry.actor.kind,
                actor=entry.actor.name,
                action=entry.action,
                target_type=entry.target_type,
                target_id=str(entry.target_id),
                reason=entry.reason,
                source=entry.actor.source,
                details=entry.details,
                prev_digest=prev,
            )
            row.digest = prev = compute_digest(row.prev_digest, row.content())
            rows.append(row)
        # One multi-row INSERT assigns ids in list order, which is the chain's order.
        return AuditRecord.objects.bulk_create(rows, batch_size=1000)


@dataclass(frozen=True)
class ChainFault:
    record_id: int
    problem: str


def verify_chain(records: Iterator[AuditRecord]) -> ChainFault | None:
    """Return the first record that breaks the chain, or None when it is whole."""
    expected_prev = GENESIS
    for entry in records:
        if entry.prev_digest != expected_prev:
            return ChainFault(entry.pk, "does not follow its predecessor (a record was deleted, inserted or reordered)")
        if not hmac.compare_digest(entry.digest, compute_digest(entry.prev_digest, entry.content())):
            return ChainFault(entry.pk, "content does not match its digest (the record was altered)")
        expected_prev = entry.digest
    return None
