from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from quotas.conf import parse_networks
from quotas.engine import QuotaEngine, connect
from quotas.engine_factory import reset_engines
from quotas.models import Tier, UserQuota
from quotas.policy import Quota, quota_for_user
from quotas.services import QuotaService, service
from quotas.subjects import user_subject
from quotas.throttling import TierRateThrottle, client_ip, ip_subject


class PingView(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [TierRateThrottle]

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [path("ping", PingView.as_view())]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def user_on(tier: Tier, name: str = "ada", **override):
    user = get_user_model().objects.create_user(name)
    UserQuota.objects.create(user=user, tier=tier, **override)
    return user


@pytest.fixture
def tier():
    return Tier.objects.create(slug="small", name="Small", requests_per_minute=60, burst=3)


@pytest.fixture
def client():
    return APIClient()


def ping(client, **extra):
    return client.get("/ping", **extra)


def statuses(client, n: int, **extra) -> list[int]:
    return [ping(client, **extra).status_code for _ in range(n)]


class TestUsers:
    def test_limited_at_the_tiers_burst(self, client, tier):
        client.force_authenticate(user_on(tier))
        assert statuses(client, 4) == [200, 200, 200, 429]

    def test_429_is_shaped_like_openai_with_retry_after(self, client, tier):
        client.force_authenticate(user_on(tier))
        statuses(client, 3)
        response = ping(client)
        assert response.status_code == 429
        assert int(response["Retry-After"]) >= 1
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "rate_limit_exceeded"
        assert error["type"] == "requests"
        assert "requests_per_minute" in error["message"]

    def test_counted_by_id_not_by_address(self, client, tier):
        client.force_authenticate(user_on(tier))
        statuses(client, 3, REMOTE_ADDR="10.0.0.1")
        assert ping(client, REMOTE_ADDR="10.0.0.2").status_code == 429
        other = APIClient()
        other.force_authenticate(user_on(tier, "bob"))
        assert statuses(other, 3, REMOTE_ADDR="10.0.0.1") == [200, 200, 200]

    def test_override_applies(self, client, tier):
        client.force_authenticate(user_on(tier, burst=1))
        assert statuses(client, 2) == [200, 429]

    def test_requests_per_day(self, client):
        daily = Tier.objects.create(slug="daily", name="Daily", requests_per_day=2)
        client.force_authenticate(user_on(daily))
        assert statuses(client, 3) == [200, 200, 429]
        response = ping(client)
        assert response.json()["error"]["code"] == "insufficient_quota"
        assert int(response["Retry-After"]) > 60

    def test_a_soft_tier_lets_the_requests_through_and_says_so(self, client):
        from quotas.signals import quota_exceeded

        soft = Tier.objects.create(slug="soft", name="Soft", requests_per_day=2, soft=True)
        user = user_on(soft)
        client.force_authenticate(user)
        seen = []

        def receive(sender, **kwargs):
            seen.append((kwargs["user_id"], kwargs["limit"], kwargs["soft"]))

        quota_exceeded.connect(receive)
        try:
            assert statuses(client, 4) == [200, 200, 200, 200]
        finally:
            quota_exceeded.disconnect(receive)
        assert seen == [(user.pk, "requests_per_day", True)] * 2
        usage = service.usage(user.pk, quota_for_user(user))
        assert usage.day_usage.requests == 4  # counted all the same

    def test_blocked_user_gets_403(self, client, tier):
        client.force_authenticate(user_on(tier, blocked=True))
        response = ping(client)
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_error"
        assert response.json()["error"]["code"] == "blocked"

    def test_without_a_default_tier_a_user_with_no_tier_gets_403(self, client):
        Tier.objects.update(is_default=False)
        client.force_authenticate(get_user_model().objects.create_user("nobody"))
        response = ping(client)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "no_tier"


class TestAnonymous:
    @pytest.fixture(autouse=True)
    def anonymous_tier(self, settings):
        Tier.objects.create(slug="anon", name="Anonymous", requests_per_minute=60, burst=2)
        settings.QUOTAS = {**settings.QUOTAS, "ANONYMOUS_TIER": "anon"}

    def test_limited_by_ip_with_the_anonymous_tier(self, client):
        assert statuses(client, 3, REMOTE_ADDR="203.0.113.7") == [200, 200, 429]
        assert ping(client, REMOTE_ADDR="203.0.113.8").status_code == 200

    def test_forwarded_forms_bucket_apart(self, client, settings):
        """A port or brackets do not merge clients into one bucket."""
        settings.QUOTAS = {**settings.QUOTAS, "NUM_PROXIES": 1}
        proxy = {"REMOTE_ADDR": "10.0.0.1"}
        statuses(client, 2, HTTP_X_FORWARDED_FOR="1.2.3.4:5555", **proxy)
        assert ping(client, HTTP_X_FORWARDED_FOR="1.2.3.4:6666", **proxy).status_code == 429
        assert ping(client, HTTP_X_FORWARDED_FOR="[2001:db8::1]:443", **proxy).status_code == 200

    def test_without_trusted_proxies_x_forwarded_for_is_ignored(self, client):
        statuses(client, 2, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.1")
        response = ping(client, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.2")
        assert response.status_code == 429

    def test_a_forged_forwarded_address_gets_no_fresh_bucket(self, client, settings):
        settings.QUOTAS = {**settings.QUOTAS, "NUM_PROXIES": 1}
        proxy = {"REMOTE_ADDR": "10.0.0.1"}
        statuses(client, 2, HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy)
        forged = ping(client, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7", **proxy)
        assert forged.status_code == 429
        # Another real client behind the same proxy has its own bucket.
        assert ping(client, HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy).status_code == 200

    def test_ipv6_counted_by_64_prefix(self, client):
        statuses(client, 2, REMOTE_ADDR="2001:db8:1:2::1")
        assert ping(client, REMOTE_ADDR="2001:db8:1:2:ffff::9").status_code == 429
        assert ping(client, REMOTE_ADDR="2001:db8:1:3::1").status_code == 200

    def test_default_tier_when_no_anonymous_tier_is_named(self, client, settings):
        settings.QUOTAS = {**settings.QUOTAS, "ANONYMOUS_TIER": None}
        Tier.objects.filter(is_default=True).update(burst=1)
        assert statuses(client, 2) == [200, 429]

    def test_refused_without_a_default_tier_when_no_anonymous_tier_is_named(self, client, settings):
        settings.QUOTAS = {**settings.QUOTAS, "ANONYMOUS_TIER": None}
        Tier.objects.update(is_default=False)
        response = ping(client)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "no_tier"


@pytest.mark.parametrize(
    ("meta", "proxies", "expected"),
    [
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1"}, 0, "10.0.0.1"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 2.2.2.2"}, 1, "2.2.2.2"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 2.2.2.2"}, 2, "1.1.1.1"),
        ({"REMOTE_ADDR": "10.0.0.1"}, 1, "10.0.0.1"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4:5555"}, 1, "1.2.3.4"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "[2001:db8::1]"}, 1, "2001:db8::1"),
        (
            {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "[2001:db8::1]:443"},
            1,
            "2001:db8::1",
        ),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "2001:db8::1"}, 1, "2001:db8::1"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "unknown"}, 1, "10.0.0.1"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, bad"}, 1, "10.0.0.1"),
    ],
)
def test_client_ip(meta, proxies, expected):
    assert client_ip(meta, proxies) == expected


TRUSTED = parse_networks(("10.0.0.0/8", "2001:db8:ffff::1"))


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        # A peer that is no trusted proxy: its own address, whatever it writes.
        ("198.51.100.9", "1.1.1.1", "198.51.100.9"),
        # A trusted proxy: the rightmost hop that is not a trusted proxy.
        ("10.0.0.1", "1.1.1.1", "1.1.1.1"),
        ("10.0.0.1", "1.1.1.1, 2.2.2.2", "2.2.2.2"),
        ("10.0.0.1", "1.1.1.1, 2.2.2.2, 10.9.9.9", "2.2.2.2"),
        ("2001:db8:ffff::1", "[2001:db8::7]:443, 10.1.1.1", "2001:db8::7"),
        ("::ffff:10.0.0.1", "1.2.3.4:5555", "1.2.3.4"),
        # Only trusted hops: the leftmost of them; none at all: the proxy itself.
        ("10.0.0.1", "10.2.2.2, 10.3.3.3", "10.2.2.2"),
        ("10.0.0.1", "", "10.0.0.1"),
        # A hop that is no address ends the walk at the proxy that wrote it.
        ("10.0.0.1", "1.1.1.1, unknown", "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1, unknown, 10.2.2.2", "10.2.2.2"),
    ],
)
def test_client_ip_behind_trusted_proxies(remote, forwarded, expected):
    meta = {"REMOTE_ADDR": remote, "HTTP_X_FORWARDED_FOR": forwarded}
    assert client_ip(meta, 0, TRUSTED) == expected


def test_trusted_proxies_bucket_callers_of_a_trusted_proxy_apart(client, settings):
    Tier.objects.create(slug="anon", name="Anonymous", requests_per_minute=60, burst=1)
    settings.QUOTAS = {
        **settings.QUOTAS,
        "ANONYMOUS_TIER": "anon",
        "TRUSTED_PROXIES": ["10.0.0.0/8"],
    }
    assert ping(client, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 200
    assert ping(client, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 200
    # A caller reaching the app directly cannot pick a fresh bucket through the header.
    direct = {"REMOTE_ADDR": "198.51.100.9"}
    assert ping(client, HTTP_X_FORWARDED_FOR="3.3.3.3", **direct).status_code == 200
    assert ping(client, HTTP_X_FORWARDED_FOR="4.4.4.4", **direct).status_code == 429


def test_ip_subject():
    assert ip_subject("203.0.113.7") == "ip:203.0.113.7"
    assert ip_subject("2001:db8::1") == ip_subject("2001:db8::ffff:1") == "ip:2001:db8::/64"
    assert ip_subject("::ffff:203.0.113.7") == "ip:203.0.113.7"
    assert ip_subject("not an address") == "ip:unknown"


class TestWait:
    def test_wait_is_a_number_before_any_decision(self):
        assert TierRateThrottle().wait() == 1.0

    def test_wait_follows_the_rate(self):
        slow = Tier.objects.create(slug="slow", name="Slow", requests_per_minute=6, burst=1)
        request = RequestFactory().get("/ping")
        request.user = user_on(slow)
        throttle = TierRateThrottle()
        assert throttle.allow_request(request, None) is True
        assert throttle.allow_request(request, None) is False
        wait = throttle.wait()
        assert isinstance(wait, float)
        assert 9 <= wait <= 10  # one request per 10 s


class TestRedisDown:
    @pytest.fixture(autouse=True)
    def unreachable(self, settings, tier, client):
        client.force_authenticate(user_on(tier))
        settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0"}
        reset_engines()

    def test_fail_open_lets_requests_through(self, client, settings):
        settings.QUOTAS = {**settings.QUOTAS, "FAIL_OPEN": True}
        assert statuses(client, 5) == [200] * 5

    def test_fail_closed_answers_503(self, client, settings):
        settings.QUOTAS = {**settings.QUOTAS, "FAIL_OPEN": False}
        response = ping(client)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "quota_unavailable"
        assert response.json()["error"]["type"] == "server_error"
        assert response["Retry-After"] == "1"


DAILY = 50


def daily_user() -> tuple[int, Quota]:
    tier = Tier.objects.create(slug="daily", name="Daily", requests_per_day=DAILY)
    user = user_on(tier)
    quota = quota_for_user(user)
    service.usage(user.pk, quota)  # windows seeded from the (empty) ledger up front
    return user.pk, quota


def _attempts(job: tuple[str | None, int, Quota, int, int]) -> int:
    """Admitted requests of `threads` x `each` attempts (run in a worker process too)."""
    url, user_id, quota, threads, each = job
    checker = QuotaService(QuotaEngine(connect(url), prefix="quotas"))
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> int:
        barrier.wait()
        subject = user_subject(user_id)
        return sum(
            checker.check_request(subject, quota, track_usage=True).allowed for _ in range(each)
        )

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(attempt, range(threads)))


def test_exact_under_threads(redis_url):
    user_id, quota = daily_user()
    assert _attempts((redis_url, user_id, quota, 16, 10)) == DAILY
    assert service.usage(user_id, quota).day_usage.requests == DAILY


@pytest.mark.slow
def test_exact_under_processes(real_redis):
    user_id, quota = daily_user()
    # Forked workers inherit the set-up Django; each opens its own Redis connections.
    with multiprocessing.get_context("fork").Pool(4) as pool:
        admitted = pool.map(_attempts, [(real_redis, user_id, quota, 8, 10)] * 4)
    assert sum(admitted) == DAILY
    assert service.usage(user_id, quota).day_usage.requests == DAILY
