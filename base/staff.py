"""Second factors of staff users: a TOTP device and static backup codes."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from base import audit
from base.audit import Actor


class EnrollmentError(ValueError):
    pass


@dataclass(frozen=True)
class Enrollment:
    device: TOTPDevice
    backup_codes: list[str]

    @property
    def otpauth_url(self) -> str:
        return str(self.device.config_url)


@transaction.atomic
def enroll_totp(user: AbstractBaseUser, actor: Actor, *, replace: bool = False, backup_codes: int = 10) -> Enrollment:
    """Give a staff user a confirmed TOTP device and fresh backup codes (shown once)."""
    if not getattr(user, "is_staff", False):
        raise EnrollmentError(f"{user.get_username()} is not a staff user")
    existing = TOTPDevice.objects.filter(user=user)
    if existing.exists() and not replace:
        raise EnrollmentError(f"{user.get_username()} already has a TOTP device; pass --replace to replace it")
    existing.delete()
    StaticDevice.objects.filter(user=user).delete()
    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    static = StaticDevice.objects.create(user=user, name="backup codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(backup_codes)]
    for code in codes:
        static.token_set.create(token=code)
    audit.record(actor, "staff.second_factor_enrolled", "user", user.get_username(), backup_codes=backup_codes)
    return Enrollment(device, codes)
