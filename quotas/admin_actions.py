"""Staff actions on users' counters, and the usage dashboard view."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.http import url_has_allowed_host_and_scheme

from . import adjustments, dashboard
from .engine import CountersUnavailable

UNREACHABLE = (
    "Recorded, but the quota counters (Redis) were unreachable: the change applies once "
    "today's counters are next re-seeded from the ledger."
)


def _back(request: HttpRequest) -> HttpResponse | None:
    """Where the action was started from (a user's page), if it said so and is safe."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, {request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(target)
    return None


def _apply(model_admin: Any, request: HttpRequest, queryset: Any, change: Any, done: str) -> None:
    count, unreachable = 0, False
    for user in queryset:
        try:
            change(user)
        except CountersUnavailable:
            unreachable = True
        count += 1
    model_admin.message_user(request, done.format(count=count), messages.SUCCESS)
    if unreachable:
        model_admin.message_user(request, UNREACHABLE, messages.WARNING)


def _confirm_context(model_admin: Any, request: HttpRequest, queryset: Any) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "users": queryset,
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "next": request.POST.get("next", ""),
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }


@admin.action(description="Reset today's counters…", permissions=["change"])
def reset_today(model_admin: Any, request: HttpRequest, queryset: Any) -> HttpResponse | None:
    """Asks first (a page listing the users), then gives back what they used today."""
    if "apply" not in request.POST:
        context = {**_confirm_context(model_admin, request, queryset), "title": "Reset today"}
        return TemplateResponse(request, "admin/quotas/reset_confirm.html", context)

    def change(user: Any) -> None:
        adjustments.reset_today(user.pk, created_by=request.user, reason="Reset in the admin")

    _apply(model_admin, request, queryset, change, "Today's counters reset for {count} user(s).")
    return _back(request)


class BoostForm(forms.Form):
    tokens = forms.IntegerField(
        min_value=0,
        max_value=adjustments.MAX_BOOST,
        initial=0,
        help_text="Extra tokens for today.",
    )
    requests = forms.IntegerField(
        min_value=0,
        max_value=adjustments.MAX_BOOST,
        initial=0,
        help_text="Extra requests for today.",
    )
    reason = forms.CharField(max_length=200, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not (data.get("tokens") or data.get("requests")):
            raise forms.ValidationError("Give at least some extra tokens or requests.")
        return data


@admin.action(
    description="Grant a temporary boost (until the end of the day)…", permissions=["change"]
)
def grant_boost(model_admin: Any, request: HttpRequest, queryset: Any) -> HttpResponse | None:
    form = BoostForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        tokens, requests = form.cleaned_data["tokens"], form.cleaned_data["requests"]

        def change(user: Any) -> None:
            adjustments.grant_boost(
                user.pk,
                tokens=tokens,
                requests=requests,
                created_by=request.user,
                reason=form.cleaned_data["reason"] or "Boost in the admin",
            )

        done = f"Boost of {tokens:,} tokens and {requests:,} requests granted to {{count}} user(s)."
        _apply(model_admin, request, queryset, change, done)
        return _back(request)
    context = {
        **_confirm_context(model_admin, request, queryset),
        "title": "Grant a temporary boost",
        "form": form,
    }
    return TemplateResponse(request, "admin/quotas/boost_form.html", context)


def dashboard_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    """The usage dashboard: every user against their limits, totals, charts, breakdowns."""
    figures = dashboard.dashboard(request.GET)
    context = {
        **model_admin.admin_site.each_context(request),
        **figures,
        "title": "Usage dashboard",
        "opts": model_admin.model._meta,
    }
    return TemplateResponse(request, "admin/quotas/dashboard.html", context)
