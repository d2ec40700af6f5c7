"""Every admin action, run as the admin runs it: a POST to the changelist, a confirmation page, a reason.

Each test checks the state the action changes and the audit record it leaves, with the
staff user as the actor and the reason the user typed.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from base.models import AuditRecord
from jobs.models import Job
from keys.models import ApiClient
from registry.models import ModelVersion
from sessions.models import KeySession
from tests.helpers import login, make_staff, otp_code

CHANGELISTS = {
    "retire": "/admin/inference/modelversion/",
    "cancel": "/admin/jobs/job/",
    "rotate_keys": "/admin/keys/apiclient/",
    "issue_api_key": "/admin/keys/apiclient/",
    "issue_compat_token": "/admin/keys/apiclient/",  # its test is in test_compat_admin.py
    "disable_clients": "/admin/keys/apiclient/",
    "enable_clients": "/admin/keys/apiclient/",
    "invalidate_sessions": "/admin/key_sessions/keysession/",
    "expire_sessions": "/admin/key_sessions/keysession/",
    "lift_suspensions": "/admin/key_sessions/keysession/",
}


def run_action(client: Client, action: str, selected: list[Any], reason: str | None, **kwargs: Any) -> Any:
    """Choose the action on the changelist; with a reason, confirm it on the page that asks for one."""
    data: dict[str, Any] = {"action": action, "_selected_action": [str(pk) for pk in selected], "index": "0"}
    if reason is not None:
        data.update({"confirm": "yes", "reason": reason})
    return client.post(CHANGELISTS[action], data, **kwargs)


def staff_record(action: str, target_id: str) -> tuple[str, str, str]:
    record = AuditRecord.objects.get(action=action, target_id=target_id)
    return record.actor_kind, record.actor, record.reason


def invalidate(client: Client, session_id: str, reason: str | None) -> Any:
    return run_action(client, "invalidate_sessions", [session_id], reason, follow=True)


def test_invalidate_action_asks_for_a_reason_then_ends_the_session(staff_client, alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    confirm = invalidate(staff_client, context_id, None)
    assert b"Invalidate sessions" in confirm.content
    assert KeySession.objects.get(pk=context_id).status == "active"
    empty = invalidate(staff_client, context_id, "   ")
    assert b"Give a reason" in empty.content
    assert KeySession.objects.get(pk=context_id).status == "active"
    done = invalidate(staff_client, context_id, "phished laptop")
    assert b"Invalidated 1 session(s); 0 had already ended" in done.content
    assert KeySession.objects.get(pk=context_id).status == "invalidated"
    assert staff_record("session.invalidated", context_id) == ("staff", "sam", "phished laptop")
    again = invalidate(staff_client, context_id, "again")
    assert b"Invalidated 0 session(s); 1 had already ended" in again.content


def test_staff_without_the_permission_cannot_run_the_action(db, alice, logreg, open_session):
    user, enrollment = make_staff("viewer", superuser=False)
    user.user_permissions.add(Permission.objects.get(codename="view_keysession"))
    client = Client()
    login(client, "viewer", otp_code(enrollment))
    context_id = open_session(alice, logreg)
    page = client.get("/admin/key_sessions/keysession/")
    assert page.status_code == 200
    assert b"invalidate_sessions" not in page.content
    response = invalidate(client, context_id, "trying anyway")
    assert b"You do not have permission to run" in response.content
    assert KeySession.objects.get(pk=context_id).status == "active"


def test_rotate_keys_action(staff_client, alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    confirm = run_action(staff_client, "rotate_keys", [alice.client.pk], None)
    assert b"Rotate keys" in confirm.content
    response = run_action(staff_client, "rotate_keys", [alice.client.pk], "key leak", follow=True)
    assert b"Rotated keys of 1 client(s); ended 1 session(s)" in response.content
    assert KeySession.objects.get(pk=context_id).status == "invalidated"
    assert staff_record("client.keys_rotated", "alice") == ("staff", "sam", "key leak")


def test_issue_api_key_action_shows_the_new_key_once_and_refuses_the_old(staff_client, alice, logreg):
    page = run_action(staff_client, "issue_api_key", [alice.client.pk], "key in a screenshot")
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    new_key = re.search(rb'<code id="new-api-key">([^<]+)</code>', page.content).group(1).decode()
    assert new_key != alice.api_key
    assert alice.http.get("/api/v1/models").status_code == 401
    alice.http.credentials(HTTP_AUTHORIZATION=f"Bearer {new_key}")
    assert alice.http.get("/api/v1/models").status_code == 200
    assert staff_record("client.api_key_rotated", "alice") == ("staff", "sam", "key in a screenshot")
    assert new_key not in staff_client.get("/admin/keys/apiclient/").content.decode()


def test_lift_suspension_action(staff_client, alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    KeySession.objects.filter(pk=context_id).update(status="suspended", circuit_aborts=3)
    done = run_action(staff_client, "lift_suspensions", [context_id], "runtime fixed", follow=True)
    assert b"Lifted the suspension of 1 session(s)" in done.content
    session = KeySession.objects.get(pk=context_id)
    assert (session.status, session.circuit_aborts) == ("active", 0)
    assert staff_record("session.suspension_lifted", context_id) == ("staff", "sam", "runtime fixed")


def test_retire_action_stops_offering_the_version_and_records_the_reason(staff_client, logreg):
    confirm = run_action(staff_client, "retire", [logreg.pk], None)
    assert b"Retire model versions" in confirm.content
    assert ModelVersion.objects.get(pk=logreg.pk).status == "active"
    done = run_action(staff_client, "retire", [logreg.pk], "accuracy regression", follow=True)
    assert b"Retired 1 model version(s); 0 already were." in done.content
    assert ModelVersion.objects.get(pk=logreg.pk).status == "retired"
    target = f"{logreg.name}:v{logreg.version}"
    assert staff_record("model.retired", target) == ("staff", "sam", "accuracy regression")
    again = run_action(staff_client, "retire", [logreg.pk], "again", follow=True)
    assert b"Retired 0 model version(s); 1 already were." in again.content


def _job(alice: Any, logreg: ModelVersion, context_id: str, status: str) -> Job:
    finished = timezone.now() if status in Job.FINISHED else None
    return Job.objects.create(
        session_id=context_id, client=alice.client, model_version=logreg, input_count=1, inputs_sha256="0" * 64,
        status=status, finished_at=finished,
    )  # fmt: skip


def test_cancel_action_cancels_queued_jobs_only_and_records_the_reason_given(staff_client, alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    queued = _job(alice, logreg, context_id, Job.Status.QUEUED)
    done_job = _job(alice, logreg, context_id, Job.Status.SUCCEEDED)
    confirm = run_action(staff_client, "cancel", [queued.pk, done_job.pk], None)
    assert b"Cancel jobs" in confirm.content
    assert Job.objects.get(pk=queued.pk).status == "queued"
    done = run_action(staff_client, "cancel", [queued.pk, done_job.pk], "client asked by phone", follow=True)
    assert b"Cancelled 1 job(s); 1 were no longer queued." in done.content
    assert Job.objects.get(pk=queued.pk).status == "cancelled"
    assert Job.objects.get(pk=done_job.pk).status == "succeeded"
    assert staff_record("job.cancelled", str(queued.pk)) == ("staff", "sam", "client asked by phone")
    assert not AuditRecord.objects.filter(action="job.cancelled", target_id=str(done_job.pk)).exists()


def test_disable_then_enable_actions(staff_client, alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    confirm = run_action(staff_client, "disable_clients", [alice.client.pk], None)
    assert b"Disable clients" in confirm.content
    assert ApiClient.objects.get(pk=alice.client.pk).is_active
    disabled = run_action(staff_client, "disable_clients", [alice.client.pk], "unpaid invoice", follow=True)
    assert b"Disabled 1 client(s); 0 already were." in disabled.content
    assert not ApiClient.objects.get(pk=alice.client.pk).is_active
    assert KeySession.objects.get(pk=context_id).status == "invalidated"
    assert alice.http.get("/api/v1/models").status_code == 403
    assert staff_record("client.disabled", "alice") == ("staff", "sam", "unpaid invoice")
    enabled = run_action(staff_client, "enable_clients", [alice.client.pk], "invoice paid", follow=True)
    assert b"Enabled 1 client(s); 0 already were." in enabled.content
    assert ApiClient.objects.get(pk=alice.client.pk).is_active
    assert alice.http.get("/api/v1/models").status_code == 200
    assert staff_record("client.enabled", "alice") == ("staff", "sam", "invoice paid")


def test_expire_action_ends_sessions_as_expired(staff_client, alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    confirm = run_action(staff_client, "expire_sessions", [context_id], None)
    assert b"Expire sessions" in confirm.content
    assert KeySession.objects.get(pk=context_id).status == "active"
    done = run_action(staff_client, "expire_sessions", [context_id], "customer offboarded", follow=True)
    assert b"Expired 1 session(s); 0 had already ended." in done.content
    session = KeySession.objects.get(pk=context_id)
    assert (session.status, session.keys_blob) == ("expired", "")
    assert staff_record("session.expired", context_id) == ("staff", "sam", "customer offboarded")
    selection = AuditRecord.objects.get(action="sessions.expired")
    assert (selection.actor, selection.reason, selection.details) == (
        "sam",
        "customer offboarded",
        {"matched": 1, "ended": 1},
    )


def test_every_state_changing_action_has_a_changelist_test():
    """A new admin action gets a changelist test here: its name must be in CHANGELISTS."""
    from django.contrib import admin

    actions = {
        name
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in {"inference", "jobs", "keys", "key_sessions", "ops"}  # not the vendors' apps
        for name in (model_admin.actions or [])
        if isinstance(name, str) and name != "export_jsonl"  # read-only, tested in test_admin.py
    }
    assert actions == set(CHANGELISTS)
