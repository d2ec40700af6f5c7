"""The admin console: second factor, lockout, pages, read-only audit log (actions: test_admin_actions.py)."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from base.models import AuditRecord
from sessions.models import KeySession
from tests.helpers import STAFF_PASSWORD as PASSWORD
from tests.helpers import login, make_staff, otp_code


def test_a_password_alone_reaches_no_admin_page(db):
    make_staff("nofactor", enroll=False)
    client = Client()
    response = login(client, "nofactor", "")
    assert response.request["PATH_INFO"] == "/admin/login/"
    assert client.get("/admin/key_sessions/keysession/").status_code == 302
    assert client.get("/admin/overview/").status_code == 302


def test_wrong_and_reused_codes_are_refused(db):
    _, wrong_user = make_staff("walt")
    wrong = f"{(int(otp_code(wrong_user)) + 1) % 1000000:06d}"
    refused = login(Client(), "walt", wrong)
    assert refused.request["PATH_INFO"] == "/admin/login/"
    assert b"errornote" in refused.content
    _, enrollment = make_staff("rita")
    client = Client()
    current = otp_code(enrollment)
    assert login(client, "rita", current).request["PATH_INFO"] == "/admin/"
    client.post("/admin/logout/")
    reused = login(Client(), "rita", current)
    assert reused.request["PATH_INFO"] == "/admin/login/"
    # A code already used is refused like a wrong one, with the login form's one answer.
    assert b"correct username, password and authentication code" in reused.content


def test_a_backup_code_works_once(db):
    _, enrollment = make_staff("bea")
    backup = enrollment.backup_codes[0]
    assert login(Client(), "bea", backup).request["PATH_INFO"] == "/admin/"
    assert login(Client(), "bea", backup).request["PATH_INFO"] == "/admin/login/"


def test_repeated_failures_lock_the_account_out(db, settings):
    _, enrollment = make_staff("lou")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "lou", "password": "wrong", "otp_token": "000000"})
    locked = login(Client(), "lou", otp_code(enrollment))
    assert locked.status_code in (403, 429)
    assert b"Too many failed logins" in locked.content


def test_audit_log_is_read_only_for_everyone(staff_client):
    assert staff_client.get("/admin/ops/auditrecord/").status_code == 200
    record = AuditRecord.objects.first()
    assert staff_client.get("/admin/ops/auditrecord/add/").status_code == 403
    assert staff_client.post(f"/admin/ops/auditrecord/{record.pk}/change/", {"reason": "x"}).status_code == 403
    assert staff_client.post(f"/admin/ops/auditrecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    export = staff_client.post(
        "/admin/ops/auditrecord/", {"action": "export_jsonl", "_selected_action": [record.pk], "index": "0"}
    )
    assert export["Content-Type"] == "application/x-ndjson"
    assert b"staff.second_factor_enrolled" in b"".join(export.streaming_content)


def test_session_search_by_fingerprint_and_filters(staff_client, alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    fingerprint = KeySession.objects.get(pk=context_id).key_fingerprint
    found = staff_client.get("/admin/key_sessions/keysession/", {"q": fingerprint})
    assert context_id.encode() in found.content
    assert context_id.encode() in staff_client.get("/admin/key_sessions/keysession/", {"q": context_id}).content
    assert context_id.encode() in staff_client.get("/admin/key_sessions/keysession/?expiry=hour").content
    assert context_id.encode() not in staff_client.get("/admin/key_sessions/keysession/?status__exact=expired").content


def test_overview_shows_counts_and_charts(staff_client, alice, logreg, open_session):
    from django.utils import timezone

    from jobs.models import Job

    context_id = open_session(alice, logreg)
    empty = staff_client.get("/admin/overview/")
    assert empty.content.count(b"No jobs in the last 24 hours.") == 2
    assert b'<svg viewBox="0 0 720 200"' not in empty.content
    Job.objects.create(
        session_id=context_id, client=alice.client, model_version=logreg, input_count=1, inputs_sha256="0" * 64,
        status=Job.Status.SUCCEEDED, finished_at=timezone.now(),
    )  # fmt: skip
    page = staff_client.get("/admin/overview/")
    assert page.status_code == 200
    assert re.search(rb'id="stat-sessions">1<', page.content)
    assert page.content.count(b'<svg viewBox="0 0 720 200"') == 2
    assert b"5000 ms alert" in page.content
    assert b"No jobs in the last 24 hours." not in page.content


def test_enroll_totp_command(db):
    User.objects.create_user("ops", password=PASSWORD, is_staff=True)
    User.objects.create_user("guest", password=PASSWORD)
    out = io.StringIO()
    call_command("enroll_totp", "ops", stdout=out)
    text = out.getvalue()
    assert "otpauth://totp/" in text
    assert len(text.strip().splitlines()[-1].split()) == 10
    with pytest.raises(CommandError, match="already has"):
        call_command("enroll_totp", "ops", stdout=io.StringIO())
    call_command("enroll_totp", "ops", "--replace", "--no-qr", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not a staff user"):
        call_command("enroll_totp", "guest", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no user named"):
        call_command("enroll_totp", "nobody", stdout=io.StringIO())


def test_every_failed_login_gets_the_same_answer(db):
    """A wrong password, a wrong code, an account without a device and an unknown user read alike."""
    _, enrollment = make_staff("una")
    make_staff("nodevice", enroll=False)
    right = otp_code(enrollment)
    wrong_code = f"{(int(right) + 1) % 1000000:06d}"
    attempts = {
        "wrong password": {"username": "una", "password": "not the password", "otp_token": right},
        "wrong code": {"username": "una", "password": PASSWORD, "otp_token": wrong_code},
        "backup-shaped wrong code": {"username": "una", "password": PASSWORD, "otp_token": "abcdefgh"},
        "no code": {"username": "una", "password": PASSWORD, "otp_token": ""},
        "no device": {"username": "nodevice", "password": PASSWORD, "otp_token": right},
        "unknown user": {"username": "nobody", "password": PASSWORD, "otp_token": right},
    }
    answers = {}
    for name, data in attempts.items():
        response = Client().post("/admin/login/?next=/admin/", data)
        errors = re.findall(rb'<p class="errornote">\s*(.*?)\s*</p>', response.content, re.S)
        errors += re.findall(rb'<ul class="errorlist[^"]*">(.*?)</ul>', response.content, re.S)
        answers[name] = (response.status_code, tuple(errors))
    assert len(set(answers.values())) == 1, answers
    status, errors = answers["wrong code"]
    assert status == 200
    assert b"correct username, password and authentication code" in b"".join(errors)


def test_wrong_codes_count_towards_the_lockout(db, settings):
    _, enrollment = make_staff("guess")
    wrong = f"{(int(otp_code(enrollment)) + 1) % 1000000:06d}"
    for _ in range(settings.AXES_FAILURE_LIMIT):
        Client().post("/admin/login/", {"username": "guess", "password": PASSWORD, "otp_token": wrong})
    locked = login(Client(), "guess", otp_code(enrollment))
    assert locked.status_code in (403, 429)


def test_overview_needs_permission_to_view_jobs_and_sessions(db):
    user, enrollment = make_staff("auditor", superuser=False)
    client = Client()
    assert login(client, "auditor", otp_code(enrollment)).request["PATH_INFO"] == "/admin/"
    assert client.get("/admin/overview/").status_code == 403
    assert b"moai-overview-link" not in client.get("/admin/").content
    user.user_permissions.add(Permission.objects.get(codename="view_keysession"))
    assert Client().get("/admin/overview/").status_code == 302  # anonymous: to the login page
    assert client.get("/admin/overview/").status_code == 403  # one of the two is not enough
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert client.get("/admin/overview/").status_code == 200
    assert b"moai-overview-link" in client.get("/admin/").content


def test_admin_and_docs_pages_load_only_from_this_origin(staff_client):
    from base.security import PAGE_POLICY

    pages = {
        "login": Client().get("/admin/login/"),
        "index": staff_client.get("/admin/"),
        "overview": staff_client.get("/admin/overview/"),
        "sessions": staff_client.get("/admin/key_sessions/keysession/"),
        "docs": Client().get("/api/docs"),
    }
    for name, page in pages.items():
        assert page.status_code == 200, name
        assert page["Content-Security-Policy"] == PAGE_POLICY, name
        html = page.content.decode()
        # Every script, stylesheet and image the page loads is a path on this origin.
        for url in re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="([^"]+)"', html):
            assert url.startswith("/"), f"{name}: {url}"
            assert not url.startswith("//"), f"{name}: {url}"
        # No inline script (the CSP would block it): every <script> has a src or is a JSON data block.
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, f"{name}: {tag}"
    assert "script-src 'self'" in PAGE_POLICY
    assert "unsafe-eval" not in PAGE_POLICY
    docs = pages["docs"].content.decode()
    bundle = re.search(r'<script src="([^"]+swagger-ui-bundle\.js)"', docs)
    assert bundle, docs[:500]
    served = Client().get(bundle.group(1))
    assert served.status_code == 200
    assert b"SwaggerUI" in b"".join(served.streaming_content)  # type: ignore[attr-defined]
    script = re.search(r'<script src="(/api/docs\?[^"]*script=[^"]*)"', docs)
    assert script, docs[-800:]
    assert b"SwaggerUIBundle" in Client().get(script.group(1).replace("&amp;", "&")).content
    # The API's own answers are never pages.
    assert "default-src 'none'" in Client().get("/healthz")["Content-Security-Policy"]
