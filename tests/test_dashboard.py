from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient

from quotas import dashboard, engine_factory
from quotas.charts import bar_chart, usd
from quotas.ledger import today
from quotas.models import APIKey, Tier, UsageRecord, UserQuota
from quotas.policy import quota_for_user
from quotas.services import service

pytestmark = pytest.mark.django_db

DASHBOARD = "admin:quotas_dashboard"


def make_user(name: str, **limits):
    tier = Tier.objects.create(slug=f"tier-{name}", name=f"Tier {name}", **limits)
    user = get_user_model().objects.create_user(name)
    UserQuota.objects.create(user=user, tier=tier)
    return user


def spend(user, prompt: int, completion: int, cost_micros: int = 0, model: str = "gpt-4o-mini"):
    """One settled AI call: reserve the worst case, settle to what was used."""
    decision, grant = service.reserve(
        user.pk, quota_for_user(user), model=model, tokens=prompt + completion, spend=cost_micros
    )
    assert grant is not None, decision
    service.settle(grant, prompt_tokens=prompt, completion_tokens=completion, cost=cost_micros)


def deny(user, tokens: int):
    _, grant = service.reserve(
        user.pk, quota_for_user(user), model="gpt-4o-mini", tokens=tokens, spend=0
    )
    assert grant is None


@pytest.fixture
def ada():
    return make_user(
        "ada",
        requests_per_day=100,
        tokens_per_day=1000,
        tokens_per_month=10_000,
        spend_per_month=Decimal("1"),
        max_concurrent_requests=4,
        requests_per_minute=60,
        burst=10,
    )


class TestMeters:
    def test_percent_and_level(self):
        assert dashboard._meter("t", "T", False, 799, 1000).level == "ok"
        near = dashboard._meter("t", "T", False, 800, 1000)
        assert (near.level, near.percent, near.used, near.limit) == ("near", 80, "800", "1,000")
        over = dashboard._meter("t", "T", False, 1000, 1000)
        assert (over.level, over.percent, over.width) == ("over", 100, 100)

    def test_unlimited_has_no_bar(self):
        meter = dashboard._meter("spend_per_day", "Spend today", True, 1_500_000, None)
        assert (meter.level, meter.limit, meter.used) == ("free", None, "$1.50")

    def test_money_is_exact_without_trailing_zeros(self):
        assert [usd(Decimal(v)) for v in ("5", "0.14442", "0.000001", "1234.5")] == [
            "$5.00",
            "$0.14442",
            "$0.000001",
            "$1,234.50",
        ]

    def test_a_zero_limit_is_over(self):
        assert dashboard._meter("t", "T", False, 0, 0).level == "over"


class TestUserPanel:
    def test_live_figures_equal_the_quota_endpoint(self, ada):
        spend(ada, 300, 200, cost_micros=250_000)
        deny(ada, 900)
        panel = dashboard.user_panel(ada, history=True)
        meters = {m.name: m for m in panel.meters}
        assert (meters["tokens_per_day"].used, meters["tokens_per_day"].limit) == ("500", "1,000")
        assert meters["tokens_per_day"].percent == 50
        assert meters["spend_per_month"].used == "$0.25"
        assert meters["spend_per_day"].used == "$0.25"
        assert meters["requests_per_day"].used == "1"
        assert meters["max_concurrent_requests"].used == "0"

        _, key = APIKey.objects.create_key(user=ada, name="t")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        report = client.get("/v1/quota").json()
        assert report["limits"]["tokens_per_day"]["used"] == 500
        assert report["limits"]["spend_per_month"]["used"] == "0.250000"
        assert panel.chart is not None and panel.chart.bars[-1].title.endswith("500 tokens")

    def test_near_and_over_limits_are_alerts(self, ada):
        spend(ada, 850, 0)
        assert [(m.name, m.level) for m in dashboard.user_panel(ada).alerts] == [
            ("tokens_per_day", "near")
        ]
        spend(ada, 150, 0)
        assert dashboard.user_panel(ada).alerts[0].level == "over"

    def test_unreachable_counters_leave_a_message(self, ada, settings):
        settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0"}
        engine_factory.reset_engines()
        panel = dashboard.user_panel(ada)
        assert panel.meters == [] and "unreachable" in panel.error


def test_the_dashboard_tries_a_dead_redis_once(ada, settings, monkeypatch):
    spend(ada, 10, 10)
    get_user_model().objects.create_user("bob")
    settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0"}
    engine_factory.reset_engines()
    calls = []
    usage = service.usage
    monkeypatch.setattr(service, "usage", lambda *a: calls.append(a) or usage(*a))
    figures = dashboard.dashboard()
    assert figures["unreachable"] and len(calls) == 1
    assert dict(figures["totals"])["Today"]["tokens"] == 20  # the ledger is still read


class TestDashboard:
    def test_totals_top_spenders_and_denials_come_from_the_ledger(self, ada):
        bob = make_user("bob", tokens_per_day=100)
        spend(ada, 100, 50, cost_micros=10_000)
        spend(bob, 40, 40, cost_micros=30_000)
        deny(bob, 50)
        deny(bob, 50)
        figures = dashboard.dashboard()
        today_total = dict(figures["totals"])["Today"]
        assert (today_total["requests"], today_total["tokens"], today_total["denied"]) == (
            2,
            230,
            2,
        )
        assert today_total["cost_display"] == "$0.04"
        assert [r["username"] for r in figures["top_spenders"]] == ["bob", "ada"]
        assert [r["share"] for r in figures["top_spenders"]] == [75, 25]
        assert [(r["username"], r["denied"], r["today"]) for r in figures["denied"]] == [
            ("bob", 2, 2)
        ]
        assert [(p.user.username, m.name) for p, m in figures["alerts"]] == [
            ("bob", "tokens_per_day")
        ]

    def test_users_with_usage_come_first_fifty_per_page(self, ada):
        User = get_user_model()
        User.objects.bulk_create(User(username=f"user{n:03}") for n in range(60))
        spend(ada, 10, 10)
        figures = dashboard.dashboard()
        assert figures["page"].paginator.count == 61
        assert len(figures["rows"]) == dashboard.PER_PAGE
        assert figures["rows"][0][0].user == ada
        assert len(dashboard.dashboard(page_number=2)["rows"]) == 11
        assert [p.user.username for p, _ in dashboard.dashboard(search="user05")["rows"]] == [
            f"user05{n}" for n in range(10)
        ]

    def test_site_chart_covers_thirty_days(self, ada):
        day, _, _ = today()
        UsageRecord.objects.create(
            user=ada, day=day - timedelta(days=29), model="m", requests=1, prompt_tokens=400
        )
        UsageRecord.objects.create(user=ada, day=day, model="m", requests=1, prompt_tokens=100)
        chart = dashboard.dashboard()["site_chart"]
        assert len(chart.bars) == 30
        assert chart.bars[0].height == 4 * chart.bars[-1].height > 0
        assert (chart.peak, chart.total) == ("400", "500")


class TestCharts:
    def test_bars_are_scaled_to_the_peak(self):
        day, _, _ = today()
        days = [day - timedelta(days=1), day]
        chart = bar_chart(days, [Decimal("0.5"), Decimal("1")], "spend", money=True)
        assert chart.bars[1].y == chart.height - 20 - chart.bars[1].height
        assert chart.bars[0].height * 2 == chart.bars[1].height
        assert chart.total == "$1.50"

    def test_no_usage_draws_empty_bars(self):
        day, _, _ = today()
        chart = bar_chart([day], [0], "tokens", small=True)
        assert chart.bars[0].height == 0


class TestDashboardPage:
    def test_renders_for_staff_with_view_permission(self, admin_client, ada):
        spend(ada, 300, 200, cost_micros=250_000)
        response = admin_client.get(reverse(DASHBOARD))
        assert response.status_code == 200
        html = response.content.decode()
        assert 'data-limit="tokens_per_day"' in html and "500</span> / <span" in html
        assert "<svg" in html and "quotas/dashboard.css" in html
        assert 'href="https://' not in html  # nothing from a CDN

    def test_the_totals_show_cached_and_reasoning_tokens(self, admin_client, ada):
        _, grant = service.reserve(ada.pk, quota_for_user(ada), model="gpt-4o", tokens=400, spend=0)
        assert grant is not None
        service.settle(
            grant,
            prompt_tokens=300,
            completion_tokens=100,
            cost=0,
            cached_tokens=256,
            reasoning_tokens=40,
        )

        html = admin_client.get(reverse(DASHBOARD)).content.decode()

        assert html.count('<dd data-figure="cached">256</dd>') == 2  # today, this month
        assert html.count('<dd data-figure="reasoning">40</dd>') == 2

    def test_linked_from_the_app_index_and_the_ledger(self, admin_client):
        url = reverse(DASHBOARD)
        assert url in admin_client.get("/admin/quotas/").content.decode()
        ledger = reverse("admin:quotas_usagerecord_changelist")
        assert url in admin_client.get(ledger).content.decode()

    def test_staff_without_permission_is_refused(self, client):
        staff = get_user_model().objects.create_user("staff", is_staff=True)
        client.force_login(staff)
        assert client.get(reverse(DASHBOARD)).status_code == 403

    def test_anonymous_is_sent_to_login(self, client):
        response = client.get(reverse(DASHBOARD))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
