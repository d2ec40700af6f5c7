"""The operators' actions that span layers: rotating a client's keys and disabling it (which
end its sessions), ending a selection of sessions, and the periodic sweep (expiring lapsed
sessions, erasing results past retention, removing orphaned keys).

Each is one function writing its own audit records; this app's admin, management commands
and beat task, and the REST API (api), call these, never the pieces below them one by one. Ending one
session together with its jobs is jobs.ending's (end_session, end_sessions): the worker's
task, below this package, suspends sessions through it too. Nothing below this package
imports it (tests/test_layers.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from base import audit, rules
from base.audit import Actor
from jobs import services as job_services
from jobs.ending import end_session, end_sessions
from keys.models import ApiClient
from sessions import services as session_services
from sessions.models import KeySession


def end_selected_sessions(
    sessions: QuerySet[KeySession], scope: str, status: str, actor: Actor, reason: str
) -> tuple[int, int]:
    """An operator's incident action over a selection: end its active sessions; (matched, ended).

    Writes one record for the action itself, whatever it matched, besides one per ended
    session: the audit log must show that the response was carried out even when the
    selection held no open session.
    """
    reason = rules.reason(reason)
    with transaction.atomic():
        matched = sessions.count()
        ended = end_sessions(sessions, status, actor, reason)
        audit.record(actor, f"sessions.{status}", "selection", scope, reason, matched=matched, ended=ended)
    return matched, ended


def expire_due_sessions(actor: Actor | None = None) -> int:
    """End every active session whose TTL has passed; returns how many were ended."""
    due = KeySession.objects.filter(expires_at__lte=timezone.now())
    return end_sessions(due, KeySession.Status.EXPIRED, actor or Actor.system("expiry"), "TTL passed")


def sweep(actor: Actor | None = None) -> tuple[int, int, int]:
    """The periodic sweep: expire lapsed sessions, erase results past their retention, remove orphaned keys."""
    expired = expire_due_sessions(actor)
    purged = job_services.purge_expired_results(settings.MOAI_RESULT_RETENTION_SECONDS)
    orphans = session_services.remove_orphaned_keys(actor)
    return expired, purged, orphans


def ensure_current(session: KeySession) -> KeySession:
    """Expire a session at request time once its TTL has passed, before the sweeper gets to it."""
    if session.has_lapsed(timezone.now()):
        end_session(session, KeySession.Status.EXPIRED, Actor.system("expiry"), "TTL passed")
    return session


def rotate_client_keys(client: ApiClient, actor: Actor, reason: str) -> int:
    """End all of a client's sessions and refuse the evaluation keys they used: the next session needs new keys.

    Returns how many sessions were ended. Rotating again is harmless.
    """
    reason = rules.reason(reason)
    with transaction.atomic():
        ApiClient.objects.filter(pk=client.pk).update(keys_rotated_at=timezone.now())
        ended = end_sessions(client.sessions.all(), KeySession.Status.INVALIDATED, actor, f"keys rotated: {reason}")
        audit.record(actor, "client.keys_rotated", "client", client.name, reason, sessions_ended=ended)
    client.refresh_from_db()
    return ended


def set_client_active(client: ApiClient, active: bool, actor: Actor, reason: str) -> bool:
    """Enable or disable a client; disabling also ends its sessions. False when nothing changed."""
    reason = rules.reason(reason)
    with transaction.atomic():
        changed = ApiClient.objects.filter(pk=client.pk, is_active=not active).update(is_active=active)
        ended = 0
        if not active:
            ended = end_sessions(
                client.sessions.all(), KeySession.Status.INVALIDATED, actor, f"client disabled: {reason}"
            )
        # Recorded even when the client already was in that state: the operator's action happened.
        audit.record(
            actor, "client.enabled" if active else "client.disabled", "client", client.name, reason,
            changed=bool(changed), sessions_ended=ended,
        )  # fmt: skip
    client.refresh_from_db()
    return bool(changed)
