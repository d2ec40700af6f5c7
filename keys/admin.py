"""API clients in the admin: disable, enable, rotate keys, each with a reason."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from rest_framework_api_key.models import APIKey

from actions.services import rotate_client_keys, set_client_active
from base.admin_actions import ReadOnlyAdmin, confirm_with_reason, issue_secret_once
from base.audit import Actor
from keys.models import ApiClient, ClientApiKey
from keys.services import rotate_api_key


def _rotate(queryset: QuerySet[ApiClient], actor: Actor, reason: str) -> str:
    ended = sum(rotate_client_keys(client, actor, reason) for client in queryset)
    return f"Rotated keys of {queryset.count()} client(s); ended {ended} session(s). Earlier keys are refused."


def _activate(active: bool) -> Any:
    def perform(queryset: QuerySet[ApiClient], actor: Actor, reason: str) -> str:
        changed = sum(set_client_active(client, active, actor, reason) for client in queryset)
        verb = "Enabled" if active else "Disabled"
        return f"{verb} {changed} client(s); {queryset.count() - changed} already were."

    return perform


@admin.register(ApiClient)
class ApiClientAdmin(ReadOnlyAdmin):
    list_display = ["name", "is_active", "active_sessions", "created_at", "keys_rotated_at"]
    list_filter = ["is_active"]
    search_fields = ["name"]
    # compat/admin.py adds "issue_compat_token" after "issue_api_key" (compat sits above keys).
    actions = ["rotate_keys", "issue_api_key", "disable_clients", "enable_clients"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiClient]:
        return super().get_queryset(request).annotate(n_active=Count("sessions", filter=Q(sessions__status="active")))

    @admin.display(description="active sessions", ordering="n_active")
    def active_sessions(self, obj: Any) -> int:
        return int(obj.n_active)

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("keys.manage_apiclient")

    @admin.action(description="Rotate keys for selected clients", permissions=["manage"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> TemplateResponse | None:
        return confirm_with_reason(
            self, request, queryset, title="Rotate keys",
            consequence="All sessions of these clients end now and the evaluation keys they used are refused: "
            "their next session needs a fresh keygen.",
            perform=_rotate,
        )  # fmt: skip

    @admin.action(description="Issue a new API key (the current one stops working)", permissions=["manage"])
    def issue_api_key(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> TemplateResponse | None:
        return issue_secret_once(
            self, request, queryset, noun="API key", issue=rotate_api_key,
            template="admin/moai/new_api_key.html", secret_name="api_key",
        )  # fmt: skip

    @admin.action(description="Disable selected clients", permissions=["manage"])
    def disable_clients(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> TemplateResponse | None:
        return confirm_with_reason(
            self, request, queryset, title="Disable clients",
            consequence="These clients get 403 on every request and their sessions end now.",
            perform=_activate(False),
        )  # fmt: skip

    @admin.action(description="Enable selected clients", permissions=["manage"])
    def enable_clients(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> TemplateResponse | None:
        return confirm_with_reason(
            self, request, queryset, title="Enable clients",
            consequence="These clients can call the API again; their old sessions stay ended.",
            perform=_activate(True),
        )  # fmt: skip


# djangorestframework-api-key registers its base APIKey model, which this service
# does not use (keys belong to clients: ClientApiKey); offering "Add" there would mislead.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(ClientApiKey)
class ClientApiKeyAdmin(ReadOnlyAdmin):
    list_display = ["prefix", "client", "created", "revoked", "expiry_date"]
    list_filter = ["revoked"]
    search_fields = ["prefix", "client__name"]
