"""Admin actions that change state ask for a reason on a confirmation page first.

The action then calls the same service function as the matching management
command, with the staff user as the actor, and reports what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from base.audit import Actor
from base.rules import RuleError

Perform = Callable[[QuerySet[Any], Actor, str], str]


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept in the audit log with your name.",
        error_messages={"required": "Give a reason: it goes into the audit log."},
    )


def staff_actor(request: HttpRequest) -> Actor:
    return Actor.staff(request.user.get_username(), request.META.get("REMOTE_ADDR", ""))


def confirm_with_reason(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    title: str,
    consequence: str,
    perform: Perform,
) -> TemplateResponse | None:
    form = ReasonForm(request.POST if request.POST.get("confirm") == "yes" else None)
    if form.is_valid():
        try:
            message = perform(queryset, staff_actor(request), form.cleaned_data["reason"])
        except RuleError as exc:
            modeladmin.message_user(request, f"Nothing was changed: {exc}.", messages.ERROR)
            return None
        modeladmin.message_user(request, message, messages.SUCCESS)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "consequence": consequence,
        "objects": list(queryset[:200]),
        "count": queryset.count(),
        "form": form,
        "action": request.POST.get("action", ""),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "opts": modeladmin.model._meta,
        "select_across": request.POST.get("select_across", "0"),
    }
    return TemplateResponse(request, "admin/moai/confirm_action.html", context)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows change only through service functions (and their actions), never by form."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Django ignores an action the user may not run without a word; say so instead.
        action = request.POST.get("action") if request.method == "POST" else None
        if action and action not in self.get_actions(request):
            self.message_user(
                request, f"You do not have permission to run '{action}'; nothing was changed.", messages.ERROR
            )
            return HttpResponseRedirect(request.get_full_path())
        return super().changelist_view(request, extra_context)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


def issue_secret_once(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    noun: str,
    issue: Callable[[Any, Actor, str], str],
    template: str,
    secret_name: str,
) -> TemplateResponse | None:
    """Confirm with a reason, issue one client's new ``noun`` (an API key, a token) and show it
    once, on a page no cache keeps; the current one stops working at once."""
    if queryset.count() != 1:
        modeladmin.message_user(request, f"Select exactly one client: its new {noun} is shown once.", messages.ERROR)
        return None
    issued: list[str] = []

    def perform(selected: QuerySet[Any], actor: Actor, reason: str) -> str:
        issued.append(issue(selected.get(), actor, reason))
        return f"Issued a new {noun}; the earlier one is refused from now on."

    confirmation = confirm_with_reason(
        modeladmin, request, queryset, title=f"Issue a new {noun}",
        consequence=f"The client's current {noun} stops working at once; its sessions stay open. "
        f"The new {noun} is shown once, on the next page.",
        perform=perform,
    )  # fmt: skip
    if not issued:
        return confirmation
    context = {**modeladmin.admin_site.each_context(request), "title": f"New {noun}", "client": queryset.get(),
               secret_name: issued[0], "opts": modeladmin.model._meta}  # fmt: skip
    response = TemplateResponse(request, template, context)
    response["Cache-Control"] = "no-store"  # shown once: no copy in any cache
    return response
