"""The append-only audit log.

Each record carries a sequence number without gaps and an HMAC (keyed by
``MOAI_AUDIT_KEY``, named by ``key_id``) over its own content and its predecessor's
digest, so an edited, deleted, inserted or reordered record breaks the chain
(``manage.py verify_audit_log``); checkpoints outside the database catch a missing
tail (:mod:`base.audit_checkpoints`). Records are written only by :mod:`base.audit`.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class AuditRecord(models.Model):
    class ActorKind(models.TextChoices):
        CLIENT = "client"
        STAFF = "staff"
        SYSTEM = "system"

    # 1, 2, 3, ... in chain order; assigned under the chain's lock, so a rolled-back write leaves no gap.
    seq = models.PositiveBigIntegerField(unique=True)
    at = models.DateTimeField(db_index=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=200, db_index=True)
    reason = models.TextField(blank=True)
    source = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    # Which audit key signed the record (base.audit.key_id), so the key can be rotated mid-chain.
    key_id = models.CharField(max_length=32)
    prev_digest = models.CharField(max_length=64)
    digest = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        permissions = [("export_auditrecord", "Can export the audit log")]

    def __str__(self) -> str:
        who = f"{self.actor_kind}:{self.actor}"
        return f"#{self.seq} {self.at:%Y-%m-%d %H:%M:%S} {who} {self.action} {self.target_type}:{self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise PermissionError("audit records are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit records are append-only")

    def content(self) -> dict[str, Any]:
        """What the digest covers: every field a reader relies on."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "actor_kind": self.actor_kind,
            "actor": self.actor,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "reason": self.reason,
            "source": self.source,
            "details": self.details,
        }
