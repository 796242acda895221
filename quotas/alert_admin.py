"""The admin of alerts: the threshold rules, and every alert with its deliveries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from .models import Alert, AlertDelivery, AlertRule

if TYPE_CHECKING:
    AlertRuleAdminBase = admin.ModelAdmin[AlertRule]
    AlertAdminBase = admin.ModelAdmin[Alert]
    DeliveryInlineBase = admin.TabularInline[AlertDelivery, Alert]
else:
    AlertRuleAdminBase = AlertAdminBase = admin.ModelAdmin
    DeliveryInlineBase = admin.TabularInline


@admin.register(AlertRule)
class AlertRuleAdmin(AlertRuleAdminBase):
    list_display = ("__str__", "tier", "team", "limit", "percent")
    list_filter = ("tier", "limit")
    autocomplete_fields = ("tier", "team")


class AlertDeliveryInline(DeliveryInlineBase):
    model = AlertDelivery
    fields = ("channel", "target", "state", "attempts", "next_attempt_at", "sent_at", "last_error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(AlertAdminBase):
    list_display = ("created_at", "subject", "user", "team", "limit", "percent", "window", "used")
    list_filter = ("limit", "percent", "deliveries__state")
    list_select_related = ("user", "team")
    search_fields = ("subject", "user__username", "team__name")
    date_hierarchy = "created_at"
    inlines = (AlertDeliveryInline,)
    actions = ("retry_deliveries",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Send the unsent deliveries again at the next run")
    def retry_deliveries(self, request: HttpRequest, queryset: Any) -> None:
        count = (
            AlertDelivery.objects.filter(alert__in=queryset)
            .exclude(state=AlertDelivery.SENT)
            .update(state=AlertDelivery.PENDING, attempts=0, next_attempt_at=timezone.now())
        )
        self.message_user(request, f"{count} deliveries to send again.", messages.SUCCESS)
