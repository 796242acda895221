"""Alerts in the admin: the rules as data, every alert with its deliveries, a retry."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from quotas.models import Alert, AlertDelivery, AlertRule, Tier


@pytest.fixture
def alert(db: None) -> Alert:
    user = get_user_model().objects.create_user("ada")
    alert = Alert.objects.create(
        user=user,
        subject=f"u:{user.pk}",
        limit="spend_per_month",
        percent=100,
        window="202612",
        used=Decimal("5.01"),
        limit_value=Decimal(5),
    )
    AlertDelivery.objects.create(
        alert=alert,
        channel=AlertDelivery.WEBHOOK,
        target="https://hooks.example.com/q",
        state=AlertDelivery.FAILED,
        attempts=8,
        next_attempt_at=timezone.now(),
        last_error="URLError: refused",
    )
    return alert


def test_alerts_are_listed_with_their_deliveries(admin_client, alert) -> None:
    listing = admin_client.get(reverse("admin:quotas_alert_changelist")).content.decode()
    assert alert.subject in listing and "spend_per_month" in listing
    page = admin_client.get(reverse("admin:quotas_alert_change", args=[alert.pk]))
    assert "URLError: refused" in page.content.decode()
    assert admin_client.get(reverse("admin:quotas_alert_add")).status_code == 403


def test_failed_deliveries_can_be_sent_again(admin_client, alert) -> None:
    admin_client.post(
        reverse("admin:quotas_alert_changelist"),
        {"action": "retry_deliveries", "_selected_action": [alert.pk]},
    )
    delivery = AlertDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == (AlertDelivery.PENDING, 0)


def test_a_rule_is_added_for_a_tier(admin_client, db) -> None:
    tier = Tier.objects.get(is_default=True)
    response = admin_client.post(
        reverse("admin:quotas_alertrule_add"),
        {"tier": tier.pk, "team": "", "limit": "tokens_per_day", "percent": 90},
    )
    assert response.status_code == 302
    assert AlertRule.objects.get().percent == 90


def test_a_rule_names_a_tier_or_a_team(admin_client, db) -> None:
    response = admin_client.post(
        reverse("admin:quotas_alertrule_add"), {"tier": "", "team": "", "percent": 90}
    )
    assert "A rule is for a tier or for a team." in response.content.decode()
    assert not AlertRule.objects.exists()
