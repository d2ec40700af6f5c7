"""Model versions in the admin."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from base.admin_actions import ReadOnlyAdmin, confirm_with_reason
from base.audit import Actor
from registry.models import ModelVersion
from registry.services import retire_model


def _retire(queryset: QuerySet[ModelVersion], actor: Actor, reason: str) -> str:
    changed = sum(retire_model(model, actor, reason) for model in queryset)
    return f"Retired {changed} model version(s); {queryset.count() - changed} already were."


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "status", "evaluation_keys_bytes", "input_ciphertext_bytes", "created_at"]
    list_filter = ["status", "name"]
    search_fields = ["name", "description"]
    actions = ["retire"]

    def has_retire_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("inference.retire_modelversion")

    @admin.action(description="Retire selected model versions", permissions=["retire"])
    def retire(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> TemplateResponse | None:
        return confirm_with_reason(
            self, request, queryset, title="Retire model versions",
            consequence="New sessions get the newest remaining active version; open sessions keep running.",
            perform=_retire,
        )  # fmt: skip
