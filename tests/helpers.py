"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.test import Client
from django_otp.oath import totp
from rest_framework.test import APIClient

from ops.audit import Actor
from ops.staff import Enrollment, enroll_totp


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
