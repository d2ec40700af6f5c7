"""Small helpers shared by the tests: commands, polling, requests, the admin's staff login."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django_otp.oath import totp
from rest_framework.test import APIClient

from base.audit import Actor
from base.staff import Enrollment, enroll_totp

T = TypeVar("T")


def run_command(*args: str) -> str:
    """Run a manage.py command in this process; what it wrote to stdout."""
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def poll(check: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Call ``check`` until its answer is true or ``timeout`` seconds have passed; its last answer.

    Callers assert on the answer (or use :func:`wait_for`): a wait that runs out fails on what
    was last seen, never on how long it took.
    """
    deadline = time.monotonic() + timeout
    while not (answer := check()) and time.monotonic() < deadline:
        time.sleep(interval)
    return answer


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> None:
    assert poll(check, timeout, interval), f"timed out waiting for {what}"


def post_bytes(http: APIClient, url: str, body: bytes, **headers: str) -> Any:
    return http.generic("POST", url, body, content_type="application/octet-stream", **headers)


def error_code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


# Staff users of the admin console, which needs a password and a second factor.
STAFF_PASSWORD = "correct horse battery staple"


def make_staff(username: str, *, superuser: bool = True, enroll: bool = True) -> tuple[User, Any]:
    user = User.objects.create_user(username, password=STAFF_PASSWORD, is_staff=True, is_superuser=superuser)
    enrollment = enroll_totp(user, Actor.system("tests")) if enroll else None
    return user, enrollment


def otp_code(enrollment: Enrollment) -> str:
    return f"{totp(enrollment.device.bin_key):06d}"


def login(client: Client, username: str, token: str) -> Any:
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": STAFF_PASSWORD, "otp_token": token},
        follow=True,
    )


def session_with_wrong_keys(session: Any, wrong_keys: bytes) -> Any:
    """A copy of an opened client-side session whose server-side row holds ``wrong_keys``: keys
    that slip past the upload checks only if storage is tampered with (the runtime then aborts
    the process that runs the circuit).

    The row is written here, not opened through the API: an opened session's keys are warm in
    every pool process before its answer (jobs.warmup), so tampering with its stored keys
    afterwards would change nothing. Its fingerprint is of ``wrong_keys``, as for any row: a
    row claiming a model's constant keys runs with the copy every pool process holds instead
    of reading its stored keys. The copy encrypts with the opened session's client keys.
    """
    import dataclasses
    import hashlib
    import uuid

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from sessions.models import KeySession

    opened = KeySession.objects.get(pk=session.context_id)
    tampered = KeySession.objects.create(
        client=opened.client, model_version=opened.model_version, created_at=opened.created_at,
        expires_at=opened.expires_at, key_fingerprint=hashlib.sha256(wrong_keys).hexdigest(),
        keys_blob=default_storage.save(f"keys/{uuid.uuid4()}.bin", ContentFile(wrong_keys)),
    )  # fmt: skip
    return dataclasses.replace(session, context_id=str(tampered.pk))
