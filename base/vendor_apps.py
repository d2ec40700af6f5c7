"""Third-party apps under the names an operator would use in the admin's sidebar.

Their own configs leave ``verbose_name`` unset, so the admin shows their labels
("AXES", "OTP_TOTP", "OTP_STATIC"). These subclasses change only that.
"""

from __future__ import annotations

from axes.apps import AppConfig as AxesConfig
from django_otp.plugins.otp_static.apps import DefaultConfig as StaticConfig
from django_otp.plugins.otp_totp.apps import DefaultConfig as TotpConfig


class LoginAttemptsConfig(AxesConfig):
    verbose_name = "Login attempts"


class AuthenticatorDevicesConfig(TotpConfig):
    verbose_name = "Two-factor devices: authenticator apps"


class BackupCodeDevicesConfig(StaticConfig):
    verbose_name = "Two-factor devices: backup codes"
