"""The admin site: a second factor for every page, and the overview page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from ops.overview import overview_context


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

    def overview(self, request: HttpRequest) -> TemplateResponse:
        context = {**self.each_context(request), "title": "Service overview", **overview_context()}
        return TemplateResponse(request, "admin/moai/overview.html", context)
