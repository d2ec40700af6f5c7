"""Sessions in the admin: find them fast, end them with a reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from actions.services import end_selected_sessions
from base.admin_actions import ReadOnlyAdmin, confirm_with_reason
from base.audit import Actor
from sessions.models import KeySession
from sessions.services import lift_suspension


class ExpiryFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiry"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("hour", "Expires within an hour"), ("day", "Expires within a day"), ("later", "Expires later")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[KeySession]) -> QuerySet[KeySession]:
        now = timezone.now()
        if self.value() == "hour":
            return queryset.filter(expires_at__lte=now + timedelta(hours=1), expires_at__gt=now)
        if self.value() == "day":
            return queryset.filter(expires_at__lte=now + timedelta(days=1), expires_at__gt=now)
        if self.value() == "later":
            return queryset.filter(expires_at__gt=now + timedelta(days=1))
        return queryset


def _ender(status: str, verb: str) -> Any:
    def perform(queryset: QuerySet[KeySession], actor: Actor, reason: str) -> str:
        scope = "admin selection of " + ",".join(sorted(str(pk) for pk in queryset.values_list("pk", flat=True)))
        total, ended = end_selected_sessions(queryset, scope, status, actor, reason)
        return f"{verb} {ended} session(s); {total - ended} had already ended. Their keys are erased."

    return perform


def _lift(queryset: QuerySet[KeySession], actor: Actor, reason: str) -> str:
    lifted = sum(lift_suspension(session, actor, reason) for session in queryset)
    return f"Lifted the suspension of {lifted} session(s); {queryset.count() - lifted} were not suspended."


@admin.register(KeySession)
class KeySessionAdmin(ReadOnlyAdmin):
    list_display = ["id", "client", "model_version", "status", "created_at", "expires_at", "short_fingerprint"]
    list_filter = ["status", ExpiryFilter, "client", "model_version__name"]
    search_fields = ["=id", "key_fingerprint"]
    search_help_text = "Context id (exact) or key fingerprint"
    list_select_related = ["client", "model_version"]
    date_hierarchy = "created_at"
    actions = ["invalidate_sessions", "expire_sessions", "lift_suspensions"]
    exclude = ["keys_blob"]

    @admin.display(description="key fingerprint")
    def short_fingerprint(self, obj: KeySession) -> str:
        return obj.key_fingerprint[:16] + "…"

    def has_invalidate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("key_sessions.invalidate_keysession")

    @admin.action(description="Invalidate selected sessions", permissions=["invalidate"])
    def invalidate_sessions(self, request: HttpRequest, queryset: QuerySet[KeySession]) -> TemplateResponse | None:
        return confirm_with_reason(
            self,
            request,
            queryset,
            title="Invalidate sessions",
            consequence="These sessions end now: their evaluation keys are erased, queued jobs are cancelled, "
            "running jobs fail and stored results are erased.",
            perform=_ender(KeySession.Status.INVALIDATED, "Invalidated"),
        )

    @admin.action(description="Expire selected sessions now", permissions=["invalidate"])
    def expire_sessions(self, request: HttpRequest, queryset: QuerySet[KeySession]) -> TemplateResponse | None:
        return confirm_with_reason(
            self,
            request,
            queryset,
            title="Expire sessions",
            consequence="These sessions end now as if their TTL had passed: keys erased, jobs stopped.",
            perform=_ender(KeySession.Status.EXPIRED, "Expired"),
        )

    @admin.action(description="Lift the suspension of selected sessions", permissions=["invalidate"])
    def lift_suspensions(self, request: HttpRequest, queryset: QuerySet[KeySession]) -> TemplateResponse | None:
        return confirm_with_reason(
            self,
            request,
            queryset,
            title="Lift suspensions",
            consequence="These sessions run jobs again; their count of aborted jobs starts from 0. Their next "
            "aborts suspend them again.",
            perform=_lift,
        )
