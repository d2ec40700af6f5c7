"""Periodic work on sessions, run by Celery beat."""

from __future__ import annotations

from celery import shared_task

from actions import services as actions


@shared_task(name="sessions.tasks.expire_sessions")
def expire_sessions() -> tuple[int, int, int]:
    return actions.sweep()
