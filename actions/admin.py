"""The admin of API clients and of key sessions: their actions end sessions, with their jobs.

Here, above keys, sessions and jobs, because disabling a client, rotating its keys and
invalidating or expiring sessions go through actions.services, which keys and sessions cannot
import. keys/admin.py keeps the API keys' admin; compat/admin.py registers ApiClient again
with a subclass of ApiClientAdmin that adds compat's token action (compat sits above this app
in INSTALLED_APPS and imports this module, so its registration is the one that stays).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from actions.services import end_selected_sessions, rotate_client_keys, set_client_active
from base.admin_actions import ReadOnlyAdmin, confirm_with_reason, issue_secret_once
from base.audit import Actor
from keys.models import ApiClient
from keys.services import rotate_api_key
from sessions.models import KeySession
from sessions.services import lift_suspension


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
    # compat/admin.py adds "issue_compat_token" after "issue_api_key" (compat sits above actions).
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
