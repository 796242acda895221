from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from quotas import adjustments, engine_factory, services
from quotas import admin as quotas_admin
from quotas.models import AIModel, APIKey, Provider, QuotaAdjustment, Tier, UsageRecord, UserQuota
from quotas.policy import quota_for_user

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def models():
    return {n: AIModel.objects.create(name=n) for n in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-nano")}


@pytest.fixture
def ada():
    tier = Tier.objects.create(slug="small", name="Small", tokens_per_day=1000, requests_per_day=50)
    user = User.objects.create_user("ada")
    UserQuota.objects.create(user=user, tier=tier)
    return user


def reserve(user, tokens: int):
    return services.service.reserve(
        user.pk, quota_for_user(user), model="gpt-4o-mini", tokens=tokens, spend=0
    )


def use(user, tokens: int) -> None:
    decision, grant = reserve(user, tokens)
    assert grant is not None, decision.denied_by
    services.service.settle(grant, prompt_tokens=tokens, completion_tokens=0, cost=0)


def can_use(user, tokens: int) -> bool:
    """Whether a call of `tokens` would pass now (refunded at once, so nothing is spent)."""
    decision, grant = reserve(user, tokens)
    if grant is not None:
        services.service.refund(grant)
    return decision.allowed


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_every_model_has_an_admin():
    for model in (Tier, AIModel, Provider, APIKey, UsageRecord, QuotaAdjustment, User):
        assert admin.site.is_registered(model), model
    assert not admin.site.is_registered(LibraryAPIKey)
    user_admin = admin.site.get_model_admin(User)
    assert quotas_admin.UserQuotaInline in user_admin.inlines


@pytest.mark.parametrize(
    "name", ["tier", "aimodel", "provider", "apikey", "usagerecord", "quotaadjustment"]
)
def test_changelists_and_add_pages_load(admin_client, name, ada):
    assert admin_client.get(reverse(f"admin:quotas_{name}_changelist")).status_code == 200
    add = admin_client.get(reverse(f"admin:quotas_{name}_add")).status_code
    assert add == (403 if name in ("usagerecord", "quotaadjustment") else 200)


def test_a_provider_shows_its_key_variable_never_a_key(admin_client, monkeypatch):
    monkeypatch.setenv("ROUTER_API_KEY", "sk-never-shown")
    provider = Provider.objects.create(
        name="router", base_url="https://router.example/v1", api_key_env="ROUTER_API_KEY"
    )
    pages = [
        admin_client.get(reverse("admin:quotas_provider_changelist")),
        admin_client.get(reverse("admin:quotas_provider_change", args=[provider.pk])),
    ]
    for page in pages:
        html = page.content.decode()
        assert "ROUTER_API_KEY" in html
        assert "sk-never-shown" not in html


class TestTiers:
    def post(self, client, **values):
        data = {"name": "Team", "slug": "team", "degrade_at_percent": "", **values}
        return client.post(reverse("admin:quotas_tier_add"), data)

    def test_limits_in_the_list(self, admin_client, ada):
        html = admin_client.get(reverse("admin:quotas_tier_changelist")).content.decode()
        assert "Tokens per day" in html and "1000" in html and "unlimited" in html

    def test_default_model_must_be_allowed(self, admin_client, models):
        response = self.post(
            admin_client,
            allowed_models=[models["gpt-4o-mini"].pk],
            default_model=models["gpt-4o"].pk,
            fallback_model=models["gpt-4.1-nano"].pk,
        )
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert errors["default_model"] == ["gpt-4o is not one of this tier's allowed models."]
        assert errors["fallback_model"] == [
            "gpt-4.1-nano is not one of this tier's allowed models."
        ]
        assert not Tier.objects.filter(slug="team").exists()

    def test_allowed_models_saved(self, admin_client, models):
        allowed = [models["gpt-4o-mini"].pk, models["gpt-4.1-nano"].pk]
        response = self.post(
            admin_client,
            allowed_models=allowed,
            default_model=models["gpt-4o-mini"].pk,
            fallback_model=models["gpt-4.1-nano"].pk,
            tokens_per_day="5000",
        )
        assert response.status_code == 302
        tier = Tier.objects.get(slug="team")
        assert sorted(m.pk for m in tier.allowed_models.all()) == sorted(allowed)
        assert tier.tokens_per_day == 5000

    def test_any_default_when_every_model_is_allowed(self, admin_client, models):
        assert self.post(admin_client, default_model=models["gpt-4o"].pk).status_code == 302

    def test_zero_rate_is_refused(self, admin_client):
        response = self.post(admin_client, requests_per_minute="0")
        assert "Must be at least 1" in response.content.decode()

    def test_the_default_tier_stays_default_until_another_is(self, admin_client):
        default = Tier.objects.get(is_default=True)
        url = reverse("admin:quotas_tier_change", args=[default.pk])
        data = {"name": default.name, "slug": default.slug, "degrade_at_percent": ""}
        response = admin_client.post(url, data)  # is_default unticked
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert "Make another tier the default instead." in errors["is_default"][0]
        assert Tier.objects.get(pk=default.pk).is_default

    def test_the_default_tier_is_not_deleted(self, admin_client):
        default = Tier.objects.get(is_default=True)
        response = admin_client.post(
            reverse("admin:quotas_tier_delete", args=[default.pk]), {"post": "yes"}, follow=True
        )
        assert "cannot be deleted" in " ".join(messages_of(response))
        assert Tier.objects.filter(pk=default.pk).exists()

    def test_nor_with_the_delete_action(self, admin_client):
        default = Tier.objects.get(is_default=True)
        other = Tier.objects.create(slug="spare", name="Spare")
        changelist = reverse("admin:quotas_tier_changelist")
        picked = {"action": "delete_selected", "_selected_action": [default.pk, other.pk]}
        response = admin_client.post(changelist, {**picked, "post": "yes"}, follow=True)
        assert "cannot be deleted" in " ".join(messages_of(response))
        assert Tier.objects.filter(pk__in=[default.pk, other.pk]).count() == 2

        response = admin_client.post(
            changelist, {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"}
        )
        assert response.status_code == 302
        assert not Tier.objects.filter(pk=other.pk).exists()


class TestUserPage:
    def form_data(self, client, user) -> dict[str, object]:
        response = client.get(reverse("admin:auth_user_change", args=[user.pk]))
        form = response.context["adminform"].form
        data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
        data.update(
            date_joined_0=user.date_joined.strftime("%Y-%m-%d"),
            date_joined_1=user.date_joined.strftime("%H:%M:%S"),
            groups=[],
            user_permissions=[],
        )
        data.pop("date_joined")
        data.pop("last_login", None)
        return data

    def test_quota_inline_sets_tier_overrides_and_block(self, admin_client, ada):
        pro = Tier.objects.create(slug="pro", name="Pro", tokens_per_day=10_000)
        quota = ada.quota
        data = self.form_data(admin_client, ada)
        data.update(
            {
                "quota-TOTAL_FORMS": "1",
                "quota-INITIAL_FORMS": "1",
                "quota-0-id": quota.pk,
                "quota-0-user": ada.pk,
                "quota-0-tier": pro.pk,
                "quota-0-tokens_per_day": "42",
                "quota-0-blocked": "on",
            }
        )
        response = admin_client.post(reverse("admin:auth_user_change", args=[ada.pk]), data)
        assert response.status_code == 302, response.context["adminform"].form.errors
        effective = quota_for_user(ada)
        assert (effective.tier_slug, effective.tokens_per_day, effective.blocked) == (
            "pro",
            42,
            True,
        )

    def test_shows_the_usage_panel(self, admin_client, ada):
        use(ada, 250)
        html = admin_client.get(reverse("admin:auth_user_change", args=[ada.pk])).content.decode()
        assert 'id="quota-panel"' in html
        assert '<span class="quotas-used">250</span> / <span class="quotas-limit">1,000</span>' in (
            html
        )
        assert "Reset today's counters" in html and 'form="quotas-adjust"' in html


class TestAPIKeys:
    def test_created_key_is_shown_once_on_its_own_page_and_stored_hashed(self, admin_client, ada):
        add = reverse("admin:quotas_apikey_add")
        form = admin_client.get(add).content.decode()
        assert form.index('name="user"') < form.index('name="name"')  # User first
        response = admin_client.post(add, {"name": "laptop", "user": ada.pk})
        api_key = APIKey.objects.get(name="laptop")
        secret_url = reverse("admin:quotas_apikey_secret", args=[api_key.pk])
        assert response.status_code == 302 and response["Location"] == secret_url
        assert "messages" not in response.cookies  # the secret travels in no cookie

        page = admin_client.get(secret_url)
        assert "no-store" in page["Cache-Control"]
        html = page.content.decode()
        key = html.split('<code id="api-key-secret">')[1].split("</code>")[0]
        assert 'id="api-key-copy"' in html
        assert key.startswith(api_key.prefix + ".") and api_key.is_valid(key)
        assert api_key.user == ada and key not in api_key.hashed_key
        again = admin_client.get(secret_url, follow=True)
        assert key not in again.content.decode()
        assert "shown once already" in " ".join(messages_of(again))
        page = admin_client.get(reverse("admin:quotas_apikey_change", args=[api_key.pk]))
        assert key not in page.content.decode()

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert client.get("/v1/quota").status_code == 200

    def test_a_users_keys_are_listed_on_their_page(self, admin_client, ada):
        APIKey.objects.create_key(user=ada, name="laptop")
        APIKey.objects.create_key(user=ada, name="ci", revoked=True)
        html = admin_client.get(reverse("admin:auth_user_change", args=[ada.pk])).content.decode()
        keys = html.split('id="user-api-keys"')[1]
        assert "laptop" in keys and "ci" in keys and "revoked" in keys
        assert f"{reverse('admin:quotas_apikey_add')}?user={ada.pk}" in keys

    def test_list_and_revoke_action(self, admin_client, ada):
        api_key, key = APIKey.objects.create_key(user=ada, name="ci")
        html = admin_client.get(reverse("admin:quotas_apikey_changelist")).content.decode()
        assert api_key.prefix in html and "ada" in html and "Last used at" in html
        admin_client.post(
            reverse("admin:quotas_apikey_changelist"),
            {"action": "revoke", "_selected_action": [api_key.pk]},
        )
        api_key.refresh_from_db()
        assert api_key.revoked
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert client.get("/v1/quota").status_code == 401


class TestLedger:
    def test_read_only(self, admin_client, ada):
        row = UsageRecord.objects.create(user=ada, day="2026-01-02", model="m", requests=1)
        change = reverse("admin:quotas_usagerecord_change", args=[row.pk])
        assert admin_client.get(change).status_code == 200  # a view, not a form
        admin_client.post(change, {"requests": 99})
        row.refresh_from_db()
        assert row.requests == 1
        delete = reverse("admin:quotas_usagerecord_delete", args=[row.pk])
        assert admin_client.post(delete, {"post": "yes"}).status_code == 403

    def test_filters_and_search(self, admin_client, ada):
        bob = User.objects.create_user("bob")
        UsageRecord.objects.create(user=ada, day="2026-01-02", model="gpt-4o", requests=1)
        UsageRecord.objects.create(user=bob, day="2026-02-03", model="gpt-4o-mini", requests=2)
        url = reverse("admin:quotas_usagerecord_changelist")

        def shown(**params) -> list[str]:
            response = admin_client.get(url, params)
            assert response.status_code == 200
            return [str(r.user) for r in response.context["cl"].result_list]

        assert shown(day__year="2026", day__month="1") == ["ada"]
        assert shown(user__quota__tier__id__exact=ada.quota.tier_id) == ["ada"]
        assert shown(model="gpt-4o-mini") == ["bob"]
        assert shown(user__id__exact=bob.pk) == ["bob"]
        assert shown(user="bob") == ["bob"]
        assert shown(user="nobody") == []
        assert shown(q="ada") == ["ada"]

    def test_the_user_filter_is_a_search_box_not_a_link_per_user(self, admin_client, ada):
        User.objects.bulk_create(User(username=f"u{n}") for n in range(300))
        UsageRecord.objects.bulk_create(
            UsageRecord(user=u, day="2026-01-02", model="m") for u in User.objects.all()
        )
        html = admin_client.get(reverse("admin:quotas_usagerecord_changelist")).content.decode()
        assert 'name="user"' in html and "?user__id__exact=" not in html


@pytest.mark.django_db(transaction=True)  # counters are corrected once committed
class TestCounterActions:
    changelist = "admin:auth_user_changelist"

    def test_boost_then_reset_take_effect_at_once(self, admin_client, admin_user, ada):
        use(ada, 1000)
        assert not can_use(ada, 1)

        url = reverse(self.changelist)
        form = admin_client.post(url, {"action": "grant_boost", "_selected_action": [ada.pk]})
        assert form.status_code == 200 and b"Grant the boost" in form.content
        response = admin_client.post(
            url,
            {
                "action": "grant_boost",
                "_selected_action": [ada.pk],
                "apply": "1",
                "tokens": "300",
                "requests": "0",
                "reason": "demo day",
            },
            follow=True,
        )
        assert "Boost of 300 tokens" in " ".join(messages_of(response))
        assert can_use(ada, 300) and not can_use(ada, 301)
        use(ada, 300)
        assert not can_use(ada, 1)

        confirm = admin_client.post(url, {"action": "reset_today", "_selected_action": [ada.pk]})
        assert confirm.status_code == 200 and b"Yes, reset today" in confirm.content
        assert not can_use(ada, 1)  # asking is not doing
        admin_client.post(
            url, {"action": "reset_today", "_selected_action": [ada.pk], "apply": "1"}
        )
        # the day counts from 0 again, under the limit today's boost raised
        assert can_use(ada, 1300) and not can_use(ada, 1301)

        rows = QuotaAdjustment.objects.filter(user=ada).order_by("created_at")
        assert [(r.kind, r.tokens, r.requests, r.created_by) for r in rows] == [
            ("boost", 300, 0, admin_user),
            ("reset", 1300, 2, admin_user),
        ]
        assert rows[0].reason == "demo day"

    def test_recorded_even_with_redis_down(self, admin_client, ada, settings):
        settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0"}
        engine_factory.reset_engines()
        response = admin_client.post(
            reverse(self.changelist),
            {"action": "reset_today", "_selected_action": [ada.pk], "apply": "1"},
            follow=True,
        )
        assert "unreachable" in " ".join(messages_of(response))
        assert QuotaAdjustment.objects.get().kind == "reset"

    def test_boost_needs_tokens_or_requests(self, admin_client, ada):
        response = admin_client.post(
            reverse(self.changelist),
            {"action": "grant_boost", "_selected_action": [ada.pk], "apply": "1", "tokens": "0"},
        )
        assert b"Give at least some extra tokens or requests." in response.content
        assert not QuotaAdjustment.objects.exists()

    def test_started_from_the_user_page_returns_there(self, admin_client, ada):
        page = reverse("admin:auth_user_change", args=[ada.pk])
        response = admin_client.post(
            reverse(self.changelist),
            {"action": "reset_today", "_selected_action": [ada.pk], "next": page, "apply": "1"},
        )
        assert response.status_code == 302 and response["Location"] == page

    def test_elsewhere_is_not_followed(self, admin_client, ada):
        response = admin_client.post(
            reverse(self.changelist),
            {
                "action": "reset_today",
                "_selected_action": [ada.pk],
                "next": "https://evil.test/",
                "apply": "1",
            },
        )
        assert response["Location"] != "https://evil.test/"

    def test_adjustments_are_listed_read_only(self, admin_client, admin_user, ada):
        adjustments.grant_boost(ada.pk, requests=5, created_by=admin_user)
        url = reverse("admin:quotas_quotaadjustment_changelist")
        html = admin_client.get(url).content.decode()
        assert "Temporary boost" in html and "admin" in html
        row = QuotaAdjustment.objects.get()
        delete = reverse("admin:quotas_quotaadjustment_delete", args=[row.pk])
        assert admin_client.post(delete, {"post": "yes"}).status_code == 403


def test_boost_needs_a_positive_amount(ada):
    with pytest.raises(ValueError):
        adjustments.grant_boost(ada.pk, tokens=0)
    assert not QuotaAdjustment.objects.exists()


def test_a_boost_beyond_exact_counting_is_refused(ada, admin_client):
    with pytest.raises(ValueError, match="at most"):
        adjustments.grant_boost(ada.pk, tokens=10**18)
    assert not QuotaAdjustment.objects.exists()

    url = reverse("admin:auth_user_changelist")
    page = admin_client.post(
        url,
        {"action": "grant_boost", "_selected_action": [ada.pk], "apply": "1", "tokens": 10**18},
    )
    assert page.status_code == 200
    assert "less than or equal to" in page.content.decode()
    assert not QuotaAdjustment.objects.exists()
