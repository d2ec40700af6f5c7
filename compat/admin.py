"""Compatibility tokens and hybrid models in the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from actions.admin import ApiClientAdmin
from base.admin_actions import ReadOnlyAdmin, confirm_with_reason, issue_secret_once
from base.audit import Actor
from compat.models import CompatToken, HybridModule
from compat.services import issue_token, retire_hybrid_model, revoke_tokens
from keys.models import ApiClient
from registry.services import newest_active


def _revoke(queryset: QuerySet[CompatToken], actor: Actor, reason: str) -> str:
    clients = {token.client for token in queryset.select_related("client")}
    revoked = sum(revoke_tokens(client, actor, reason) for client in clients)
    return f"Revoked {revoked} token(s) of {len(clients)} client(s); their /compat/ URLs are refused."


def _retire(queryset: QuerySet[HybridModule], actor: Actor, reason: str) -> str:
    names = sorted(set(queryset.values_list("model_name", flat=True)))
    retired = sum(retire_hybrid_model(name, actor, reason) for name in names)
    return f"Retired {retired} module version(s) of {', '.join(names)}."


@admin.register(CompatToken)
class CompatTokenAdmin(ReadOnlyAdmin):
    list_display = ["prefix", "client", "created_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "client__name"]
    actions = ["revoke"]

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("keys.manage_apiclient")

    @admin.action(description="Revoke the tokens of the selected tokens' clients", permissions=["manage"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[CompatToken]) -> TemplateResponse | None:
        return confirm_with_reason(
            self, request, queryset, title="Revoke compatibility tokens",
            consequence="Every Concrete-ML example client of these clients gets 401 from its next request on; "
            "their sessions stay open.",
            perform=_revoke,
        )  # fmt: skip


@admin.register(HybridModule)
class HybridModuleAdmin(ReadOnlyAdmin):
    list_display = ["model_name", "module_name", "input_shape", "version_name", "served_version"]
    list_filter = ["model_name"]
    search_fields = ["model_name", "module_name", "version_name"]
    actions = ["retire"]

    @admin.display(description="served version")
    def served_version(self, obj: HybridModule) -> Any:
        model = newest_active(obj.version_name)
        return model.version if model is not None else "retired"

    def has_retire_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("inference.retire_modelversion")

    @admin.action(description="Retire the selected modules' hybrid models (every module)", permissions=["retire"])
    def retire(self, request: HttpRequest, queryset: QuerySet[HybridModule]) -> TemplateResponse | None:
        return confirm_with_reason(
            self, request, queryset, title="Retire hybrid models",
            consequence="The listings stop offering these models; sessions already open keep running.",
            perform=_retire,
        )  # fmt: skip


def issue_token_action(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[ApiClient]
) -> TemplateResponse | None:
    """The API clients' action: a new compatibility token, shown once on the page after the confirmation."""
    return issue_secret_once(
        modeladmin, request, queryset, noun="compatibility token", issue=issue_token,
        template="admin/compat/new_compat_token.html", secret_name="token",
    )  # fmt: skip


class ApiClientWithCompatAdmin(ApiClientAdmin):
    """The API clients' admin of actions, with compat's action: actions cannot import compat."""

    actions = [*ApiClientAdmin.actions[:2], "issue_compat_token", *ApiClientAdmin.actions[2:]]

    @admin.action(description="Issue a new compatibility token (the current one stops working)", permissions=["manage"])
    def issue_compat_token(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> TemplateResponse | None:
        return issue_token_action(self, request, queryset)


admin.site.unregister(ApiClient)
admin.site.register(ApiClient, ApiClientWithCompatAdmin)
