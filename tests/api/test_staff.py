from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from quotas.models import APIKey, Tier, UsageRecord, UserQuota

pytestmark = pytest.mark.django_db

User = get_user_model()
MARCH = {"date_from": "2026-03-01", "date_to": "2026-03-31"}


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_login(User.objects.create_user("root", is_staff=True))
    return client


@pytest.fixture
def ada():
    return User.objects.create_user("ada")


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


URLS = ["/api/tiers/", "/api/quotas/", "/api/keys/", "/api/usage/", "/api/usage.csv"]


class TestAccess:
    @pytest.mark.parametrize("url", URLS)
    def test_anonymous_gets_401(self, url):
        response = APIClient().get(url)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")

    @pytest.mark.parametrize("url", URLS)
    def test_non_staff_gets_403_in_openai_shape(self, url, ada):
        _, key = APIKey.objects.create_key(user=ada, name="k")
        response = bearer(key).get(url)
        assert response.status_code == 403
        if not url.endswith(".csv"):
            assert response.json()["error"]["type"] == "permission_error"

    @pytest.mark.parametrize("url", URLS)
    def test_staff_with_a_key_or_a_session(self, url, staff):
        assert staff.get(url).status_code == 200
        _, key = APIKey.objects.create_key(user=User.objects.get(username="root"), name="k")
        assert bearer(key).get(url).status_code == 200


class TestTiers:
    def test_crud(self, staff, catalogue):
        body = {
            "slug": "team",
            "name": "Team",
            "tokens_per_day": 5000,
            "spend_per_month": "12.50",
            "allowed_models": ["gpt-4o-mini", "gpt-4o"],
            "default_model": "gpt-4o-mini",
            "fallback_model": "gpt-4o-mini",
        }
        created = staff.post("/api/tiers/", body, format="json")
        assert created.status_code == 201, created.json()
        assert created.json()["allowed_models"] == ["gpt-4o", "gpt-4o-mini"]
        assert staff.get("/api/tiers/team/").json()["spend_per_month"] == "12.500000"
        patched = staff.patch("/api/tiers/team/", {"tokens_per_day": None}, format="json")
        assert patched.json()["tokens_per_day"] is None
        assert Tier.objects.get(slug="team").tokens_per_day is None
        assert staff.delete("/api/tiers/team/").status_code == 204

    def test_default_model_must_be_allowed(self, staff, catalogue):
        response = staff.post(
            "/api/tiers/",
            {
                "slug": "t",
                "name": "T",
                "allowed_models": ["gpt-4o-mini"],
                "default_model": "gpt-4o",
            },
            format="json",
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "default_model"
        assert "gpt-4o is not one of this tier's allowed models." in error["message"]

    @pytest.mark.parametrize("field", ["allowed_models", "default_model", "fallback_model"])
    def test_a_model_name_holding_a_nul_byte_is_a_400(self, staff, catalogue, field):
        name = "gpt-4o\x00"
        body = {"slug": "t", "name": "T", field: [name] if field == "allowed_models" else name}
        response = staff.post("/api/tiers/", body, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == field

    def test_changing_allowed_models_keeps_the_rule(self, staff, catalogue):
        tier = Tier.objects.create(slug="t", name="T", default_model=catalogue["gpt-4o"])
        response = staff.patch("/api/tiers/t/", {"allowed_models": ["gpt-4o-mini"]}, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "default_model"
        assert list(tier.allowed_models.all()) == []

    def test_zero_rate_refused(self, staff):
        response = staff.post(
            "/api/tiers/", {"slug": "t", "name": "T", "requests_per_minute": 0}, format="json"
        )
        assert response.json()["error"]["param"] == "requests_per_minute"

    def test_a_tier_may_be_soft(self, staff):
        response = staff.post(
            "/api/tiers/", {"slug": "trial", "name": "Trial", "soft": True}, format="json"
        )
        assert response.status_code == 201 and response.json()["soft"] is True
        assert Tier.objects.get(slug="trial").soft
        assert staff.get("/api/tiers/trial/").json()["soft"] is True

    def test_a_tier_in_use_is_not_deleted(self, staff, ada):
        tier = Tier.objects.create(slug="t", name="T")
        UserQuota.objects.create(user=ada, tier=tier)
        response = staff.delete("/api/tiers/t/")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "tier_in_use"

    def test_the_default_tier_is_not_deleted(self, staff):
        response = staff.delete("/api/tiers/default/")
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "default_tier_required"
        assert "Make another tier the default first" in error["message"]
        assert Tier.objects.filter(slug="default", is_default=True).exists()

    def test_the_default_tier_stays_default_until_another_is(self, staff):
        response = staff.patch("/api/tiers/default/", {"is_default": False}, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "is_default"
        assert Tier.objects.get(slug="default").is_default

        Tier.objects.create(slug="pro", name="Pro")
        made = staff.patch("/api/tiers/pro/", {"is_default": True}, format="json")
        assert made.status_code == 200
        assert not Tier.objects.get(slug="default").is_default
        assert staff.delete("/api/tiers/default/").status_code == 204


class TestUserQuotas:
    def test_create_override_and_see_the_effect(self, staff, ada):
        Tier.objects.create(slug="pro", name="Pro", tokens_per_day=10_000, requests_per_day=50)
        body = {"user": ada.pk, "tier": "pro", "tokens_per_day": 99}
        created = staff.post("/api/quotas/", body, format="json")
        assert created.status_code == 201, created.json()
        effective = created.json()["effective"]
        assert (effective["tier"], effective["tokens_per_day"], effective["requests_per_day"]) == (
            "pro",
            99,
            50,
        )
        blocked = staff.patch(f"/api/quotas/{ada.pk}/", {"blocked": True}, format="json")
        assert blocked.json()["blocked"] is True
        assert staff.get("/api/quotas/", {"blocked": "true"}).json()[0]["username"] == "ada"
        assert staff.get("/api/quotas/", {"tier": "free"}).json() == []

    @pytest.mark.parametrize(
        ("url", "field"),
        [
            ("/api/quotas/", "tier"),
            ("/api/quotas/", "team"),
            ("/api/teams/", "tier"),
            ("/api/keys/", "tier"),
        ],
    )
    def test_a_slug_holding_a_nul_byte_is_a_400(self, staff, ada, url, field):
        body = {"user": ada.pk, "slug": "t", "name": "T", field: "a\x00b"}
        response = staff.post(url, body, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == field

    def test_one_quota_per_user(self, staff, ada):
        UserQuota.objects.create(user=ada)
        response = staff.post("/api/quotas/", {"user": ada.pk}, format="json")
        assert response.status_code == 400 and response.json()["error"]["param"] == "user"

    def test_a_quota_stays_with_its_user(self, staff, ada):
        UserQuota.objects.create(user=ada)
        bob = User.objects.create_user("bob")
        response = staff.patch(f"/api/quotas/{ada.pk}/", {"user": bob.pk}, format="json")
        assert response.status_code == 400


class TestKeys:
    def test_issue_shows_the_key_once(self, staff, ada):
        response = staff.post("/api/keys/", {"user": ada.pk, "name": "ci"}, format="json")
        assert response.status_code == 201
        body = response.json()
        key, prefix = body["key"], body["prefix"]
        assert key.startswith(prefix + ".") and body["username"] == "ada"
        assert "key" not in staff.get(f"/api/keys/{prefix}/").json()
        assert all("key" not in row for row in staff.get("/api/keys/").json())
        assert bearer(key).get("/v1/quota").status_code == 200

    @pytest.mark.parametrize("name", [None, ""])
    def test_a_key_needs_a_name(self, staff, ada, name):
        response = staff.post("/api/keys/", {"user": ada.pk, "name": name}, format="json")
        assert response.status_code == 400 and response.json()["error"]["param"] == "name"
        assert not APIKey.objects.exists()

    def test_revoke_by_post(self, staff, ada):
        api_key, key = APIKey.objects.create_key(user=ada, name="ci")
        response = staff.post(f"/api/keys/{api_key.prefix}/revoke/")
        assert response.status_code == 200 and response.json()["revoked"] is True
        assert bearer(key).get("/v1/quota").status_code == 401

    def test_revoke_by_delete_keeps_the_record(self, staff, ada):
        api_key, key = APIKey.objects.create_key(user=ada, name="ci")
        assert staff.delete(f"/api/keys/{api_key.prefix}/").status_code == 204
        assert APIKey.objects.get(pk=api_key.pk).revoked
        assert bearer(key).get("/v1/quota").status_code == 401

    def test_filters(self, staff, ada):
        bob = User.objects.create_user("bob")
        APIKey.objects.create_key(user=ada, name="a")
        revoked, _ = APIKey.objects.create_key(user=bob, name="b", revoked=True)
        assert [k["username"] for k in staff.get("/api/keys/", {"user": ada.pk}).json()] == ["ada"]
        rows = staff.get("/api/keys/", {"revoked": "true"}).json()
        assert [k["prefix"] for k in rows] == [revoked.prefix]


class TestUsage:
    @pytest.fixture
    def ledger(self, ada):
        bob = User.objects.create_user("bob")
        rows = [
            (ada, date(2026, 3, 1), "gpt-4o", 2, 100, 50, "0.010000", 0),
            (ada, date(2026, 3, 1), "gpt-4o-mini", 1, 10, 5, "0.000100", 1),
            (ada, date(2026, 3, 2), "gpt-4o", 3, 300, 30, "0.020000", 0),
            (bob, date(2026, 3, 2), "gpt-4o-mini", 4, 40, 4, "0.000400", 2),
        ]
        for user, day, model, requests, prompt, completion, cost, denied in rows:
            UsageRecord.objects.create(
                user=user,
                day=day,
                model=model,
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost=cost,
                denied=denied,
            )
        return bob

    def test_totals_and_rows_per_day(self, staff, ledger):
        body = staff.get("/api/usage/", MARCH).json()
        assert (body["date_from"], body["date_to"], body["count"]) == (
            "2026-03-01",
            "2026-03-31",
            2,
        )
        assert body["totals"] == {
            "requests": 10,
            "prompt_tokens": 450,
            "completion_tokens": 89,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            "total_tokens": 539,
            "cost": "0.030500",
            "denied": 3,
        }
        assert [(r["day"], r["requests"], r["total_tokens"]) for r in body["rows"]] == [
            ("2026-03-02", 7, 374),
            ("2026-03-01", 3, 165),
        ]

    def test_cached_and_reasoning_tokens_are_summed(self, staff, ada, ledger):
        UsageRecord.objects.filter(user=ada, model="gpt-4o").update(
            cached_tokens=40, reasoning_tokens=7
        )
        body = staff.get("/api/usage/", {**MARCH, "group_by": "model"}).json()
        assert (body["totals"]["cached_tokens"], body["totals"]["reasoning_tokens"]) == (80, 14)
        by_model = {r["model"]: (r["cached_tokens"], r["reasoning_tokens"]) for r in body["rows"]}
        assert by_model == {"gpt-4o": (80, 14), "gpt-4o-mini": (0, 0)}

    def test_filters(self, staff, ada, ledger):
        body = staff.get(
            "/api/usage/",
            {"user": ada.pk, "date_from": "2026-03-02", "date_to": "2026-03-31", "model": "gpt-4o"},
        ).json()
        assert body["totals"]["requests"] == 3
        assert [r["day"] for r in body["rows"]] == ["2026-03-02"]

    def test_group_by_user_and_model(self, staff, ledger):
        body = staff.get("/api/usage/", {**MARCH, "group_by": "user,model"}).json()
        assert [(r["username"], r["model"], r["requests"]) for r in body["rows"]] == [
            ("ada", "gpt-4o", 5),
            ("ada", "gpt-4o-mini", 1),
            ("bob", "gpt-4o-mini", 4),
        ]

    @pytest.mark.parametrize(
        "params, param",
        [
            ({"date_from": "2026-03-05", "date_to": "2026-03-01"}, "date_from"),
            ({"date_from": "March"}, "date_from"),
            ({"group_by": "tier"}, "group_by"),
        ],
    )
    def test_bad_filters(self, staff, params, param):
        response = staff.get("/api/usage/", params)
        assert response.status_code == 400 and response.json()["error"]["param"] == param

    @pytest.mark.parametrize("url", ["/api/usage/?format=csv", "/api/usage.csv"])
    def test_csv_export(self, staff, ledger, url):
        query = "group_by=day,user&date_from=2026-03-01&date_to=2026-03-31"
        response = staff.get(url + ("&" if "?" in url else "?") + query)
        assert response.status_code == 200
        assert response.streaming
        assert response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        assert "usage-20260301-20260331.csv" in response["Content-Disposition"]
        content = b"".join(response.streaming_content).decode()
        rows = list(csv.DictReader(io.StringIO(content)))
        assert [(r["day"], r["username"], r["cost"]) for r in rows] == [
            ("2026-03-02", "ada", "0.020000"),
            ("2026-03-02", "bob", "0.000400"),
            ("2026-03-01", "ada", "0.010100"),
        ]

    def test_the_default_range_is_the_last_30_days(self, staff, ada, ledger):
        today = timezone.localdate()
        UsageRecord.objects.create(user=ada, day=today, model="gpt-4o", requests=2)
        UsageRecord.objects.create(
            user=ada, day=today - timedelta(days=30), model="gpt-4o", requests=5
        )
        body = staff.get("/api/usage/").json()
        assert (body["date_from"], body["date_to"]) == (
            str(today - timedelta(days=29)),
            str(today),
        )
        assert body["totals"]["requests"] == 2
        assert [r["day"] for r in body["rows"]] == [str(today)]

    def test_rows_come_in_pages(self, staff, ada):
        first = date(2026, 1, 1)
        UsageRecord.objects.bulk_create(
            UsageRecord(user=ada, day=first + timedelta(days=i), model="m", requests=1)
            for i in range(250)
        )
        params = {"date_from": "2026-01-01", "date_to": "2026-12-31", "page_size": 100}
        body = staff.get("/api/usage/", params).json()
        assert (body["count"], len(body["rows"]), body["previous"]) == (250, 100, None)
        assert body["totals"]["requests"] == 250  # the totals are the whole report's
        last = staff.get(body["next"]).json()
        last = staff.get(last["next"]).json()
        assert (len(last["rows"]), last["next"]) == (50, None)
        assert last["rows"][-1]["day"] == "2026-01-01"
        too_far = staff.get("/api/usage/", {**params, "page": 9})
        assert too_far.status_code == 404

    def test_a_csv_of_every_row_streams(self, staff, ada):
        first = date(2026, 1, 1)
        UsageRecord.objects.bulk_create(
            UsageRecord(user=ada, day=first + timedelta(days=i), model="m", requests=1)
            for i in range(300)
        )
        response = staff.get("/api/usage.csv", {"date_from": "2026-01-01", "date_to": "2026-12-31"})
        lines = b"".join(response.streaming_content).decode().splitlines()
        assert lines[0].split(",")[:3] == ["day", "requests", "prompt_tokens"]
        assert len(lines) == 301  # not paginated


class TestSchema:
    def test_schema_covers_v1_and_staff_endpoints(self, client):
        response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        for path in ("/v1/chat/completions", "/v1/models", "/v1/quota", "/api/tiers/"):
            assert path in paths
        assert "/api/usage/" in paths and "/api/keys/{prefix}/revoke/" in paths
        schemes = response.json()["components"]["securitySchemes"]
        assert schemes["apiKey"] == {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["apiKey"]["description"],
        }

    def test_schema_generates_without_warnings(self, tmp_path):
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", tmp_path / "s.yml")
        assert "/v1/chat/completions" in (tmp_path / "s.yml").read_text()

    def test_docs_served_offline(self, client):
        response = client.get("/api/docs/")
        assert response.status_code == 200
        html = response.content.decode()
        assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
        assert "cdn." not in html and "unpkg" not in html
