"""The admin: tiers, models, user quotas, API keys, the ledger and the usage dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as delete_selected_objects
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from . import admin_actions, dashboard, key_secrets, ledger_filters
from .models import (
    LAST_DEFAULT_DELETE,
    LAST_DEFAULT_UNSET,
    LIMIT_FIELDS,
    AIModel,
    APIKey,
    LevelUsage,
    Provider,
    QuotaAdjustment,
    Team,
    Tier,
    UsageRecord,
    UserQuota,
)

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's own classes cannot be subscripted at run time.
    TierFormBase = forms.ModelForm[Tier]
    TierAdminBase = admin.ModelAdmin[Tier]
    AIModelAdminBase = admin.ModelAdmin[AIModel]
    TeamAdminBase = admin.ModelAdmin[Team]
    ProviderAdminBase = admin.ModelAdmin[Provider]
    UserQuotaInlineBase = admin.StackedInline[UserQuota, Any]
    ReadOnlyAdminBase = admin.ModelAdmin[Any]
else:
    TierFormBase = forms.ModelForm
    TierAdminBase = AIModelAdminBase = TeamAdminBase = ProviderAdminBase = admin.ModelAdmin
    ReadOnlyAdminBase = admin.ModelAdmin
    UserQuotaInlineBase = admin.StackedInline


class TierForm(TierFormBase):
    class Meta:
        model = Tier
        fields = (
            "name",
            "slug",
            "is_default",
            "soft",
            *LIMIT_FIELDS,
            "allowed_models",
            "default_model",
            "fallback_model",
            "degrade_at_percent",
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("is_default") and self.instance.is_last_default():
            self.add_error("is_default", LAST_DEFAULT_UNSET)
        tier = Tier(
            default_model=data.get("default_model"), fallback_model=data.get("fallback_model")
        )
        try:
            tier.validate_models(list(data.get("allowed_models") or []))
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                self.add_error(name, errors)
        return data


@admin.register(Tier)
class TierAdmin(TierAdminBase):
    form = TierForm
    list_display = ("name", "slug", "is_default", *LIMIT_FIELDS)
    list_display_links = ("name",)
    empty_value_display = "unlimited"
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("allowed_models",)
    fieldsets = (
        (None, {"fields": ("name", "slug", "is_default", "soft")}),
        ("Limits", {"fields": LIMIT_FIELDS, "description": "Empty means unlimited."}),
        (
            "Models",
            {"fields": ("allowed_models", "default_model", "fallback_model", "degrade_at_percent")},
        ),
    )
    actions = ("delete_selected",)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> Any:
        tier = self.get_object(request, unquote(object_id))
        if tier is not None and tier.is_last_default():
            self.message_user(request, LAST_DEFAULT_DELETE, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:quotas_tier_change", args=[tier.pk]))
        return super().delete_view(request, object_id, extra_context)

    @admin.action(description="Delete selected tiers", permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: Any) -> Any:
        """Django's own, refused when the default tier is among the selected."""
        if any(tier.is_last_default() for tier in queryset.filter(is_default=True)):
            self.message_user(request, LAST_DEFAULT_DELETE, messages.ERROR)
            return None
        return delete_selected_objects(self, request, queryset)


@admin.register(Provider)
class ProviderAdmin(ProviderAdminBase):
    """Providers by base URL and the name of their key's variable (never the key)."""

    list_display = ("name", "base_url", "api_key_env", "timeout")
    search_fields = ("name", "base_url")
    empty_value_display = "none"


@admin.register(AIModel)
class AIModelAdmin(AIModelAdminBase):
    list_display = (
        "name",
        "provider",
        "input_price_per_million",
        "cached_input_price_per_million",
        "output_price_per_million",
        "upstream_requests_per_minute",
        "upstream_tokens_per_minute",
        "active",
    )
    list_filter = ("active", "provider")
    search_fields = ("name",)
    empty_value_display = "none"


@admin.register(Team)
class TeamAdmin(TeamAdminBase):
    """Teams: their tier, overrides, members and where their shared budget stands."""

    list_display = ("name", "slug", "tier", "blocked", "member_count")
    list_select_related = ("tier",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("standing",)
    fieldsets = (
        (None, {"fields": ("name", "slug", "tier", "blocked", "note")}),
        ("Overrides", {"fields": LIMIT_FIELDS, "description": "Empty: the tier's value."}),
        ("Usage", {"fields": ("standing",)}),
    )

    @admin.display(description="members")
    def member_count(self, team: Team) -> int:
        return team.members.count()

    @admin.display(description="Limits and usage")
    def standing(self, team: Team) -> str:
        if team.pk is None:
            return "-"
        return dashboard.team_standing(team)


class UserQuotaInline(UserQuotaInlineBase):
    model = UserQuota
    can_delete = True
    max_num = 1
    verbose_name_plural = "quota"
    fieldsets = (
        (None, {"fields": ("tier", "team", "blocked", "note")}),
        ("Overrides", {"fields": LIMIT_FIELDS, "description": "Empty: the tier's value."}),
    )


User = get_user_model()
try:
    BaseUserAdmin: type[admin.ModelAdmin[Any]] = type(admin.site.get_model_admin(User))
    admin.site.unregister(User)
except NotRegistered:
    BaseUserAdmin = UserAdmin

if TYPE_CHECKING:  # the project's own user admin, known only at run time
    QuotaUserAdminBase = admin.ModelAdmin[Any]
else:
    QuotaUserAdminBase = BaseUserAdmin


KEYS_SHOWN = 50


@admin.register(User)
class QuotaUserAdmin(QuotaUserAdminBase):
    """The project's user admin, with the quota inline, usage panel and counter actions."""

    inlines = (*BaseUserAdmin.inlines, UserQuotaInline)
    actions = (*(BaseUserAdmin.actions or ()), admin_actions.reset_today, admin_actions.grant_boost)
    list_filter = (*BaseUserAdmin.list_filter, "quota__tier", "quota__team", "quota__blocked")
    change_form_template = "admin/quotas/user_change_form.html"

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        extra_context = dict(extra_context or {})
        user = self.get_object(request, object_id)
        if user is not None and request.user.has_perm("quotas.view_usagerecord"):
            extra_context["quota_panel"] = dashboard.user_panel(user, history=True)
            extra_context["can_adjust"] = self.has_change_permission(request, user)
        if user is not None and request.user.has_perm("quotas.view_apikey"):
            keys = user.api_keys.order_by("-created")
            extra_context["api_keys"] = keys[:KEYS_SHOWN]
            extra_context["api_key_count"] = keys.count()
        return super().change_view(request, object_id, form_url, extra_context)


# The library's own APIKey model is not accepted by this project's authentication.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)


@admin.register(APIKey)
class APIKeyAdmin(APIKeyModelAdmin):
    """Keys are created here and their secret shown once, on a page of its own; only
    their hash is stored."""

    # The library's admin leaves these untyped, so mypy takes each tuple's length as its type.
    list_display = ("prefix", "user", "name", "created", "last_used_at", "expiry_date", "revoked")  # type: ignore[assignment]
    list_filter = ("revoked", "created")  # type: ignore[assignment]
    list_select_related = ("user",)
    search_fields = ("prefix", "name", "user__username")  # type: ignore[assignment]
    autocomplete_fields = ("user",)
    actions = ("revoke",)
    fieldsets = (
        (None, {"fields": ("name", "user", "expiry_date", "revoked")}),
        (
            "Limits of this key",
            {
                "fields": ("tier", *LIMIT_FIELDS),
                "description": "Empty: the owner's limits alone. None may be above the owner's.",
            },
        ),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None:
            return self.fieldsets
        _user_and_name, *rest = self.fieldsets
        return (("New key", {"fields": ("user", "name", "expiry_date")}), *rest)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = (*super().get_readonly_fields(request, obj), "last_used_at")
        return (*fields, "user") if obj is not None else fields

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False
    ) -> None:
        if obj.pk:
            obj.save()
            return
        secret = self.model.objects.assign_key(obj)
        obj.save()
        key_secrets.keep(request, obj.pk, secret)

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: Any = None) -> Any:
        return HttpResponseRedirect(reverse("admin:quotas_apikey_secret", args=[obj.pk]))

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.secret_view)
        secret = path("<path:object_id>/secret/", view, name="quotas_apikey_secret")
        return [secret, *super().get_urls()]

    def secret_view(self, request: HttpRequest, object_id: str) -> Any:
        return key_secrets.secret_view(self, request, object_id)

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)


class ReadOnlyAdmin(ReadOnlyAdminBase):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "day",
        "user",
        "model",
        "requests",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost",
        "denied",
    )
    list_filter = (ledger_filters.UserFilter, "model", "user__quota__tier")
    list_select_related = ("user",)
    date_hierarchy = "day"
    search_fields = ("user__username", "model")

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.dashboard_view)
        return [path("dashboard/", view, name="quotas_dashboard"), *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> Any:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return admin_actions.dashboard_view(self, request)


@admin.register(LevelUsage)
class LevelUsageAdmin(ReadOnlyAdmin):
    list_display = (
        "day",
        "level",
        "model",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "denied",
    )
    list_filter = ("model",)
    date_hierarchy = "day"
    search_fields = ("level", "model")


@admin.register(QuotaAdjustment)
class QuotaAdjustmentAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "day",
        "kind",
        "requests",
        "tokens",
        "created_by",
        "reason",
    )
    list_filter = ("kind", "day")
    list_select_related = ("user", "created_by")
    search_fields = ("user__username", "reason")
    date_hierarchy = "created_at"


from . import alert_admin  # noqa: E402, F401  (registers the alert rules and alerts)
