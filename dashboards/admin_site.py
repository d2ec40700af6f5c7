"""The admin site: a second factor for every page, and the overview page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from dashboards.overview import overview_context

# The one answer to every failed login: a wrong password, an unknown or inactive user, a
# non-staff account, a wrong or reused code, a throttled device and an account without a
# device all read the same, so the form tells an attacker nothing about which part was right.
FAILED_LOGIN = "Please enter a correct username, password and authentication code."
# The overview summarises jobs and sessions: seeing it needs permission to view both.
OVERVIEW_PERMISSIONS = ("jobs.view_job", "key_sessions.view_keysession")


class SecondFactorLoginForm(OTPAdminAuthenticationForm):
    """One field for the code: six digits go to the authenticator, anything else to the backup codes.

    django-otp no longer tries every device in turn (a miss would throttle devices
    that were not used); choosing by the code's shape keeps that property without
    making staff pick a device from a list during an incident.
    """

    def _chosen_device(self, user: Any) -> Device | None:
        chosen: Device | None = super()._chosen_device(user)
        if chosen is not None:
            return chosen
        token = (self.cleaned_data.get("otp_token") or "").strip()
        model = TOTPDevice if token.isdigit() and len(token) == 6 else StaticDevice
        device: Device | None = model.objects.filter(user=user, confirmed=True).first()
        return device

    def clean(self) -> dict[str, Any]:
        try:
            cleaned: dict[str, Any] = super().clean()
        except ValidationError:
            if self.get_user() is not None:
                # The password was right and the second factor was not: count it against the
                # username and address like a wrong password (django-axes listens to this signal),
                # so guessing codes locks out as fast as guessing passwords.
                user_login_failed.send(
                    sender=type(self),
                    credentials={"username": self.cleaned_data.get("username")},
                    request=self.request,
                )
                self.user_cache = None
            raise ValidationError(FAILED_LOGIN, code="invalid_login") from None
        return cleaned


class MoaiAdminSite(OTPAdminSite):
    """Staff log in with a password plus a TOTP or backup code; without a confirmed
    device an account cannot pass the login form, so it reaches no admin page."""

    site_header = "MOAI incident console"
    site_title = "MOAI admin"
    index_title = "Incident response"
    index_template = "admin/moai/index.html"
    login_form = SecondFactorLoginForm

    def get_urls(self) -> list[URLResolver | URLPattern]:
        return [path("overview/", self.admin_view(self.overview), name="overview"), *super().get_urls()]

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        context["can_view_overview"] = request.user.has_perms(OVERVIEW_PERMISSIONS)
        return context

    def overview(self, request: HttpRequest) -> TemplateResponse:
        if not request.user.has_perms(OVERVIEW_PERMISSIONS):
            raise PermissionDenied
        context = {**self.each_context(request), "title": "Service overview", **overview_context()}
        return TemplateResponse(request, "admin/moai/overview.html", context)
