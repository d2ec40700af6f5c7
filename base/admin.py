"""The audit log in the admin: read-only for everyone, filterable, exportable."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from base.admin_actions import ReadOnlyAdmin
from base.models import AuditRecord


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ["seq", "at", "actor_kind", "actor", "action", "target_type", "target_id", "reason", "source"]
    list_filter = ["action", "actor_kind", "target_type"]
    search_fields = ["actor", "target_id", "reason"]
    date_hierarchy = "at"
    actions = ["export_jsonl"]

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("ops.export_auditrecord")

    @admin.action(description="Export selected records (JSON lines)", permissions=["export"])
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[AuditRecord]) -> StreamingHttpResponse:
        lines = (
            json.dumps({"id": r.pk, **r.content(), "key_id": r.key_id, "digest": r.digest}, sort_keys=True) + "\n"
            for r in queryset.order_by("seq").iterator()
        )
        response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="moai-audit.jsonl"'
        return response
