"""The admin console in a real browser: headless Chromium driven by Playwright, against gunicorn.

Chromium is Debian's package (``make test`` installs it); Playwright's own browser
download does not work on these machines, so it is pointed at /usr/bin/chromium.
Screenshots go to build/screenshots/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User
from django_otp.oath import totp

from base.audit import Actor
from base.models import AuditRecord
from base.staff import enroll_totp
from sessions.models import KeySession

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
PASSWORD = "correct horse battery staple"
# Without these, Chromium keeps trying to reach Google's services, which this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists() or not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs it) or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread while the
    # browser is open; the tests' own ORM calls are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            yield launched
            launched.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def staff(username: str):
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True, is_superuser=True)
    return enroll_totp(user, Actor.system("tests"))


def log_in(page, base: str, username: str, token: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.fill("#id_otp_token", token)
    page.click("input[type=submit]")


def test_security_staff_invalidate_a_session_in_the_browser(stack, owner, logreg, page):
    enrollment = staff("sec-ops")
    session = owner.open_session("breast-cancer-logreg")
    owner.predict(session, owner_rows(), timeout=60)  # something for the overview's charts
    log_in(page, stack.url, "sec-ops", f"{totp(enrollment.device.bin_key):06d}")
    page.wait_for_selector("text=Incident response")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{stack.url}/admin/overview/")
    assert page.inner_text("#stat-sessions") == "1"
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

    page.goto(f"{stack.url}/admin/key_sessions/keysession/?status__exact=active")
    page.screenshot(path=str(SCREENSHOTS / "session-list.png"), full_page=True)
    page.check(f"input[name=_selected_action][value='{session.context_id}']")
    page.select_option("select[name=action]", "invalidate_sessions")
    page.click("button[name=index]")
    page.wait_for_selector("#confirm-action")
    assert KeySession.objects.get(pk=session.context_id).status == "active"  # nothing before confirming
    page.fill("#id_reason", "credential stuffing from 203.0.113.7")
    page.click("#confirm-action")
    page.wait_for_selector("text=Invalidated 1 session(s)")

    api = owner.http.session.headers
    submit = requests.post(
        f"{stack.url}/api/v1/sessions/{session.context_id}/jobs",
        data=session.encrypt(owner_rows())[0],
        headers={**api, "Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert submit.status_code == 410
    assert submit.json()["error"]["code"] == "context_invalidated"
    record = AuditRecord.objects.get(action="session.invalidated", target_id=session.context_id)
    assert (record.actor_kind, record.actor, record.reason) == (
        "staff",
        "sec-ops",
        "credential stuffing from 203.0.113.7",
    )
    assert record.source == "127.0.0.1"

    page.goto(f"{stack.url}/admin/overview/")
    assert page.inner_text("#stat-sessions") == "0"
    assert (SCREENSHOTS / "overview.png").stat().st_size > 10_000


def owner_rows():
    import numpy as np

    return np.zeros((1, 30))


def test_a_login_without_the_second_factor_is_refused(stack, page):
    enrollment = staff("no-token")
    log_in(page, stack.url, "no-token", "")
    page.wait_for_selector(".errornote")
    assert "/admin/login/" in page.url
    wrong = f"{(totp(enrollment.device.bin_key) + 1) % 1_000_000:06d}"
    log_in(page, stack.url, "no-token", wrong)
    page.wait_for_selector(".errornote")
    page.goto(f"{stack.url}/admin/key_sessions/keysession/")
    assert "/admin/login/" in page.url
    assert os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE") == "true"


def test_sidebar_names_and_an_empty_overview_read_as_an_operator_expects(stack, page):
    enrollment = staff("new-operator")
    log_in(page, stack.url, "new-operator", f"{totp(enrollment.device.bin_key):06d}")
    page.wait_for_selector("text=Incident response")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "admin-index.png"), full_page=True)
    shown = page.text_content("#content-main")  # the names as written (captions are upper-cased by CSS)
    for name in ("API clients and keys", "Two-factor devices: authenticator apps",
                 "Two-factor devices: backup codes", "Login attempts", "API clients"):  # fmt: skip
        assert name in shown, name
    others = shown.replace("API clients", "").lower()
    for label in ("axes", "otp_totp", "otp_static", "api clients"):
        assert label not in others, label

    page.goto(f"{stack.url}/admin/overview/")  # no job in this test's fresh database
    page.screenshot(path=str(SCREENSHOTS / "overview-empty.png"), full_page=True)
    assert page.locator("text=No jobs in the last 24 hours.").count() == 2
    assert page.locator(".moai-chart svg").count() == 0


def test_docs_and_admin_pages_render_under_their_csp_from_this_origin_only(stack, page):
    """Swagger UI (drawn entirely by scripts) and the admin render with the Content-Security-Policy
    on, load nothing from another origin, and the browser reports no violation."""
    origin = stack.url
    requested: list[str] = []
    violations: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.goto(f"{origin}/api/docs")
    # Swagger UI drew the API's title and its operations from the schema.
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "MOAI encrypted inference API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    assert page.locator(".opblock").count() >= 8
    page.screenshot(path=str(SCREENSHOTS / "api-docs.png"), full_page=False)
    enrollment = staff("csp-check")
    log_in(page, origin, "csp-check", f"{totp(enrollment.device.bin_key):06d}")
    page.wait_for_selector("text=Incident response")
    page.goto(f"{origin}/admin/overview/")
    page.wait_for_selector("#stat-sessions")
    page.goto(f"{origin}/admin/key_sessions/keysession/")
    page.wait_for_selector("#changelist")
    assert not violations, violations
    foreign = [url for url in requested if not url.startswith(origin) and not url.startswith("data:")]
    assert not foreign, foreign
