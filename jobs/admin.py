"""Jobs in the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from base.admin_actions import ReadOnlyAdmin, confirm_with_reason
from base.audit import Actor
from jobs.models import Job
from jobs.services import cancel_job


def _cancel(queryset: QuerySet[Job], actor: Actor, reason: str) -> str:
    cancelled = sum(cancel_job(job, actor, reason) for job in queryset.select_related("model_version", "client"))
    return f"Cancelled {cancelled} job(s); {queryset.count() - cancelled} were no longer queued."


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "client", "model_version", "status", "error_code", "input_count", "submitted_at", "latency"]
    list_filter = ["status", "model_version__name", "error_code"]
    search_fields = ["=id", "=session__id"]
    search_help_text = "Job id or context id (exact)"
    list_select_related = ["client", "model_version"]
    date_hierarchy = "submitted_at"
    actions = ["cancel"]

    @admin.display(description="latency ms")
    def latency(self, obj: Job) -> Any:
        return obj.latency_ms if obj.latency_ms is not None else "-"

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.cancel_job")

    @admin.action(description="Cancel selected queued jobs", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> TemplateResponse | None:
        return confirm_with_reason(
            self, request, queryset, title="Cancel jobs",
            consequence="Queued jobs are cancelled; jobs already running or finished are left as they are.",
            perform=_cancel,
        )  # fmt: skip
