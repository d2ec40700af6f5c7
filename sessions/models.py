"""Key sessions (their id is the *context id* of the API)."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models


class KeySession(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        EXPIRED = "expired"
        INVALIDATED = "invalidated"
        # Its jobs aborted the runtime MOAI_MAX_CIRCUIT_ABORTS times: no job runs until staff lift it.
        SUSPENDED = "suspended"

    OPEN = (Status.ACTIVE, Status.SUSPENDED)  # not ended: keys kept, TTL running

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey("keys.ApiClient", on_delete=models.CASCADE, related_name="sessions")
    model_version = models.ForeignKey("inference.ModelVersion", on_delete=models.PROTECT, related_name="sessions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    key_fingerprint = models.CharField(max_length=64, db_index=True)
    # Per-chunk digests of the keys (keys/evaluation_keys.py), kept after the session ends so
    # that a rotation can refuse near copies of its keys; empty for keys that never change.
    key_chunks = models.BinaryField(default=b"", editable=False)
    keys_blob = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.TextField(blank=True)
    circuit_aborts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("invalidate_keysession", "Can invalidate or expire sessions")]

    def __str__(self) -> str:
        return f"session {self.id} ({self.status})"

    @property
    def context_id(self) -> uuid.UUID:
        return self.id

    def has_lapsed(self, now: datetime) -> bool:
        """True once the TTL has passed, whether or not the sweeper has run yet."""
        return self.status in self.OPEN and now >= self.expires_at

    @property
    def ttl_seconds(self) -> int:
        return int((self.expires_at - self.created_at).total_seconds())
