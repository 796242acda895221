from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django.urls import reverse
from rest_framework.test import APIClient

from quotas import dashboard, engine_factory
from quotas.charts import bar_chart, usd
from quotas.ledger import today
from quotas.models import APIKey, Team, Tier, UsageRecord, UserQuota
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

    def test_a_boost_is_a_raised_limit_never_negative_usage(self):
        # the counters hold usage less the boost: 1,000 tokens given, none used yet
        meter = dashboard._meter("tokens_per_day", "T", False, -1000, 400, boost=1000)
        assert (meter.used, meter.limit, meter.boost) == ("0", "1,400", "+1,000 boost today")
        assert (meter.percent, meter.width, meter.level) == (0, 0, "ok")

    def test_bars_are_clamped(self):
        assert dashboard._meter("t", "T", False, 5000, 1000).width == 100
        assert dashboard._meter("t", "T", False, -5, 1000).width == 0

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
        requests, tokens, spend_chart, denied = panel.charts
        assert tokens.bars[-1].title.endswith("500 tokens")
        assert tokens.limit_label == "limit 1,000" and tokens.limit_y is not None
        assert requests.limit_label == "limit 100" and spend_chart.limit_y is None
        assert denied.bars[-1].title.endswith("1 denied requests")

    def test_a_boost_shows_as_a_raised_limit(self, ada):
        from quotas.adjustments import grant_boost

        grant_boost(ada.pk, tokens=1000, requests=5)
        service.correct_counters(ada.pk)  # as the commit of the adjustment does
        meters = {m.name: m for m in dashboard.user_panel(ada).meters}
        day = meters["tokens_per_day"]
        assert (day.used, day.limit, day.boost, day.percent) == (
            "0",
            "2,000",
            "+1,000 boost today",
            0,
        )
        assert (meters["requests_per_day"].limit, meters["tokens_per_month"].boost) == ("105", "")

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


def test_the_dashboard_needs_no_redis(ada, settings, monkeypatch):
    spend(ada, 10, 10)
    get_user_model().objects.create_user("bob")
    settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0"}
    engine_factory.reset_engines()
    calls = []
    usage = service.usage
    monkeypatch.setattr(service, "usage", lambda *a: calls.append(a) or usage(*a))
    figures = dashboard.dashboard(QueryDict())
    assert calls == []  # the whole dashboard comes from the database
    assert figures["totals"][0][2]["tokens"] == 20


def figures(**params):
    query = QueryDict(mutable=True)
    query.update(params)
    return dashboard.dashboard(query)


def ledger_row(user, tokens: int, day=None, cost="0", requests=1, model="gpt-4o-mini", **more):
    return UsageRecord(
        user=user,
        day=day or today()[0],
        model=model,
        requests=requests,
        prompt_tokens=tokens,
        cost=Decimal(cost),
        **more,
    )


@pytest.fixture
def crowd():
    """120 users on a 1,000 tokens a day tier: 45 over, 30 near, 45 under."""
    tier = Tier.objects.create(slug="crowd", name="Crowd", tokens_per_day=1000, is_default=False)
    User = get_user_model()
    users = User.objects.bulk_create(User(username=f"u{n:03}") for n in range(120))
    UserQuota.objects.bulk_create(UserQuota(user=u, tier=tier) for u in users)
    used = [1000 + n for n in range(45)] + [800 + n for n in range(30)] + [n for n in range(45)]
    UsageRecord.objects.bulk_create(
        ledger_row(u, tokens, cost="0.01") for u, tokens in zip(users, used, strict=True)
    )
    return tier, users


class TestDashboard:
    def test_totals_top_spenders_and_denials_come_from_the_ledger(self, ada):
        bob = make_user("bob", tokens_per_day=100)
        spend(ada, 100, 50, cost_micros=10_000)
        spend(bob, 40, 40, cost_micros=30_000)
        deny(bob, 50)
        deny(bob, 50)
        shown = figures()
        caption, _, today_total = shown["totals"][0]
        assert caption == "Today"
        assert (today_total["requests"], today_total["tokens"], today_total["denied"]) == (
            2,
            230,
            2,
        )
        assert today_total["cost_display"] == "$0.04"
        assert [r["user__username"] for r in shown["top_spenders"]] == ["bob", "ada"]
        assert [r["share"] for r in shown["top_spenders"]] == ["75.0%", "25.0%"]
        assert [(r["user__username"], r["denied"], r["today"]) for r in shown["denied"]] == [
            ("bob", 2, 2)
        ]
        assert [(r["model"], r["requests"], r["denied"]) for r in shown["by_model"]] == [
            ("gpt-4o-mini", 2, 2)
        ]

    def test_over_and_near_are_counted_over_every_user(self, crowd):
        shown = figures()
        counts = {c["name"]: c for c in shown["counts"]}
        assert (counts["tokens_per_day"]["over"], counts["tokens_per_day"]["near"]) == (45, 30)
        assert (counts["any"]["over"], counts["any"]["near"]) == (45, 30)
        assert counts["requests_per_day"]["over"] == 0
        over = figures(state="over", limit="tokens_per_day")
        assert over["standing"].matched == 45 and len(over["rows"]) == 45
        assert figures(state="near")["standing"].matched == 30
        assert "state=over" in counts["tokens_per_day"]["over_url"]

    def test_the_table_pages_and_sorts_by_percent_of_limit(self, crowd):
        shown = figures()
        assert shown["standing"].matched == 120 and len(shown["rows"]) == dashboard.PER_PAGE
        worst = [row["worst_percent"] for row, _, _ in shown["rows"]]
        assert worst == sorted(worst, reverse=True) and worst[0] == 104
        assert len(figures(page="3")["rows"]) == 20
        ascending = figures(sort="tokens_per_day")["rows"]
        assert [r["tokens_per_day_used"] for r, _, _ in ascending[:3]] == [0, 1, 2]
        by_name = figures(sort="-user")["rows"]
        assert by_name[0][0]["username"] == "u119"
        assert figures(sort="nonsense", page="x")["sort"] == "-worst"

    def test_filters_by_tier_team_search_and_blocked(self, crowd, ada):
        tier, users = crowd
        team = Team.objects.create(slug="red", name="Red")
        UserQuota.objects.filter(user__in=users[:3]).update(team=team)
        UserQuota.objects.filter(user=users[5]).update(blocked=True)
        assert figures(tier=str(tier.pk))["standing"].matched == 120
        assert [r["username"] for r, _, _ in figures(team=str(team.pk), sort="user")["rows"]] == [
            "u000",
            "u001",
            "u002",
        ]
        assert [r["username"] for r, _, _ in figures(state="blocked")["rows"]] == ["u005"]
        assert figures(q="U11")["standing"].matched == 10
        assert figures(q="%")["standing"].matched == 0  # a wildcard is a character
        assert figures(tier="999999")["filters"]["tier"] is None  # unknown: no filter
        empty = figures(q="nobody")
        assert empty["rows"] == [] and empty["counts"][0]["over"] == 45

    def test_a_boost_raises_the_limit_and_a_reset_clears_the_day(self, crowd, admin_user):
        from quotas.adjustments import grant_boost, reset_today

        _, users = crowd
        over = users[0]  # 1,000 of 1,000
        grant_boost(over.pk, tokens=1000)
        _, meters, _ = figures(q=over.username)["rows"][0]
        day = {m.name: m for m in meters}["tokens_per_day"]
        assert (day.used, day.limit, day.boost, day.level) == (
            "1,000",
            "2,000",
            "+1,000 boost today",
            "ok",
        )
        reset_today(over.pk)
        _, meters, _ = figures(q=over.username)["rows"][0]
        day = {m.name: m for m in meters}["tokens_per_day"]
        assert (day.used, day.limit, day.percent, day.width) == ("0", "2,000", 0, 0)
        assert {c["name"]: c for c in figures()["counts"]}["tokens_per_day"]["over"] == 44

    def test_the_default_tier_applies_to_users_without_a_quota(self, db):
        Tier.objects.update(is_default=False)
        Tier.objects.create(slug="free", name="Free", tokens_per_month=100, is_default=True)
        eve = get_user_model().objects.create_user("eve")
        UsageRecord.objects.create(user=eve, day=today()[0], model="m", prompt_tokens=90)
        row, meters, _ = figures()["rows"][0]
        assert (row["tier"], row["worst_percent"]) == ("Free", 90)
        assert {m.name: m.level for m in meters}["tokens_per_month"] == "near"

    def test_date_range(self, ada):
        day, _, _ = today()
        UsageRecord.objects.create(
            user=ada, day=day - timedelta(days=40), model="m", requests=2, prompt_tokens=400
        )
        UsageRecord.objects.create(user=ada, day=day, model="m", requests=1, prompt_tokens=100)
        shown = figures()
        assert len(shown["site_charts"][1].bars) == 30 and shown["site_charts"][1].total == "100"
        wide = figures(**{"from": (day - timedelta(days=59)).isoformat(), "to": day.isoformat()})
        assert len(wide["site_charts"][1].bars) == 60 and wide["site_charts"][1].total == "500"
        assert wide["totals"][2][2]["requests"] == 3 and wide["range_error"] == ""
        for bad in ({"from": "yesterday"}, {"from": "2026-05-02", "to": "2026-05-01"}):
            shown = figures(**bad)
            assert shown["range_error"] and len(shown["site_charts"][0].bars) == 30
        assert "at most" in figures(**{"from": "2020-01-01", "to": "2026-01-01"})["range_error"]

    def test_keys_with_limits_are_broken_down(self, ada):
        from quotas.models import LevelUsage

        key, _ = APIKey.objects.create_key(user=ada, name="ci", tokens_per_day=100)
        LevelUsage.objects.create(
            level=f"k:{key.pk}", day=today()[0], model="m", requests=4, prompt_tokens=40
        )
        (row,) = figures()["by_key"]
        assert (row["key"]["name"], row["requests"], row["tokens"]) == ("ci", 4, 40)


class TestCharts:
    def test_bars_stand_on_a_value_axis_with_gridlines(self):
        day, _, _ = today()
        days = [day - timedelta(days=1), day]
        chart = bar_chart(days, [Decimal("0.5"), Decimal("1")], "spend", money=True)
        assert [t.label for t in chart.values] == ["$0.00", "$0.25", "$0.50", "$0.75", "$1.00"]
        assert chart.bars[1].y == chart.top and chart.bars[1].y + chart.bars[1].height == (
            chart.baseline
        )
        assert chart.bars[0].height * 2 == chart.bars[1].height
        assert chart.total == "$1.50" and [d.label for d in chart.dates][-1] == day.strftime(
            "%b %d"
        )

    def test_the_limit_line_fits_on_the_axis(self):
        day, _, _ = today()
        chart = bar_chart([day], [1200], "tokens", limit=20_000)
        assert chart.values[-1].label == "20k" and chart.limit_y == chart.top
        assert chart.limit_label == "limit 20,000"
        above = bar_chart([day], [30_000], "tokens", limit=20_000)
        assert above.limit_y is not None and above.limit_y > above.top

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

        cards = '<span class="quotas-card-value" data-figure="{}">{}</span>'
        assert html.count(cards.format("cached", 256)) == 3  # today, this month, the range
        assert html.count(cards.format("reasoning", 40)) == 3

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


def test_the_dashboard_page_is_bounded_in_queries(
    admin_client, crowd, django_assert_max_num_queries
):
    _, users = crowd
    APIKey.objects.create_key(user=users[0], name="k", tokens_per_day=10)
    admin_client.get(reverse(DASHBOARD))  # the session, caches and templates warm
    with django_assert_max_num_queries(15):
        response = admin_client.get(reverse(DASHBOARD) + "?sort=-tokens_per_day&state=over")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<tr data-user="') >= dashboard.PER_PAGE


def test_the_page_shows_counts_sort_links_and_separate_cards(admin_client, crowd):
    html = admin_client.get(reverse(DASHBOARD)).content.decode()
    assert 'data-figure="over" href="?state=over&amp;limit=tokens_per_day#users">45</a>' in html
    assert 'href="?sort=-tokens_per_day#users">Tokens today' in html
    assert '<span class="quotas-card-value" data-figure="spend">$1.20</span>' in html
    assert '<span class="quotas-card-value" data-figure="tokens">' in html
    assert "quotas-limit-line" not in html  # the site has no daily limit
    assert 'class="quotas-gridline"' in html


def test_bad_query_strings_are_not_errors(admin_client, crowd):
    for query in ("page=-3", "page=abc", "sort=zzz", "tier=x&team=-1", "from=2026-13-01", "q=%25"):
        assert admin_client.get(reverse(DASHBOARD) + "?" + query).status_code == 200


def test_the_figures_from_the_ledger_totals_are_the_ledgers(crowd, monkeypatch):
    from quotas import ledger_totals

    _, users = crowd
    day = today()[0]
    UsageRecord.objects.bulk_create(
        ledger_row(
            u, 10 * n + back, day=day - timedelta(days=back), cost=f"0.00{n % 7}", denied=n % 3
        )
        for n, u in enumerate(users[:40])
        for back in range(1, 100, 1 + n % 9)
    )

    def shown_only(row):  # without the ranks, which order the lists and are not shown
        return {name: value for name, value in row.items() if not name.startswith("by_")}

    def shown(**params):
        out = figures(**params)
        return (
            [(caption, dict(total)) for caption, _, total in out["totals"]],
            [(c.total, [b.title for b in c.bars]) for c in out["site_charts"]],
            [shown_only(r) for r in out["top_spenders"]],
            [shown_only(r) for r in out["denied"]],
            out["by_model"],
            [row for row, _, _ in out["rows"]],
            out["counts"],
        )

    ranges = [
        {},
        {"from": (day - timedelta(days=89)).isoformat()},
        {
            "from": (day - timedelta(days=70)).isoformat(),
            "to": (day - timedelta(days=40)).isoformat(),
        },
        {"sort": "-spend_per_month_used", "page": "2"},
    ]
    from_totals = [shown(**params) for params in ranges]
    monkeypatch.setattr(ledger_totals, "kept", lambda: False)
    assert [shown(**params) for params in ranges] == from_totals
    assert from_totals[1][2] and from_totals[1][3]  # there are top spenders and denials
