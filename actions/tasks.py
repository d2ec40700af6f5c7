"""Periodic work run by Celery beat: the expiry sweep of sessions, results and orphaned keys."""

from __future__ import annotations

from celery import shared_task

from actions import services as actions


# The name is the one from before the task moved here out of sessions (sessions.tasks):
# beat's schedule (CELERY_BEAT_SCHEDULE) and messages already queued call it by that name.
@shared_task(name="sessions.tasks.expire_sessions")
def expire_sessions() -> tuple[int, int, int]:
    return actions.sweep()
