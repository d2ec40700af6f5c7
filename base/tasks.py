"""Periodic work on the audit log, run by Celery beat."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from base import audit_checkpoints


@shared_task(name="ops.tasks.checkpoint_audit_log")
def checkpoint_audit_log() -> int:
    """Publish the head's checkpoint; its sequence number, 0 for an empty log."""
    head = audit_checkpoints.publish_current_head()
    return head.seq if head else 0


@shared_task(name="ops.tasks.thin_audit_checkpoints")
def thin_audit_checkpoints() -> int:
    """Thin the shards of checkpoints older than MOAI_AUDIT_CHECKPOINT_DAYS; how many files went (0 turns it off)."""
    days = settings.MOAI_AUDIT_CHECKPOINT_DAYS
    if not days:
        return 0
    return audit_checkpoints.thin(timezone.now() - timedelta(days=days)).removed
