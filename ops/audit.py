"""Writing and checking the audit log.

:func:`record` is called by every state-changing service function, inside that
function's transaction, so a change and its record commit or roll back together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
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


def record(
    actor: Actor,
    action: str,
    target_type: str,
    target_id: object,
    reason: str = "",
    **details: Any,
) -> AuditRecord:
    with transaction.atomic():
        _lock_chain()
        last = AuditRecord.objects.order_by("-id").values_list("digest", flat=True).first()
        entry = AuditRecord(
            at=timezone.now(),
            actor_kind=actor.kind,
            actor=actor.name,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            reason=reason,
            source=actor.source,
            details=details,
            prev_digest=last or GENESIS,
        )
        entry.digest = compute_digest(entry.prev_digest, entry.content())
        entry.save()
        return entry


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
