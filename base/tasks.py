"""Periodic work on the audit log, run by Celery beat."""

from __future__ import annotations

from celery import shared_task

from base import audit_checkpoints


@shared_task(name="ops.tasks.checkpoint_audit_log")
def checkpoint_audit_log() -> int:
    """Publish the head's checkpoint; its sequence number, 0 for an empty log."""
    head = audit_checkpoints.publish_current_head()
    return head.seq if head else 0
