from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import path
from django.utils import timezone
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from quotas import policy
from quotas.authentication import KEY_RECHECK_SECONDS, APIKeyAuthentication
from quotas.models import APIKey


class WhoAmI(APIView):
    authentication_classes = [APIKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = []

    def get(self, request):
        return Response({"user": request.user.get_username(), "key": request.auth.name})


urlpatterns = [path("whoami", WhoAmI.as_view())]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def user():
    return get_user_model().objects.create_user("ada")


@pytest.fixture
def issued(user):
    return APIKey.objects.create_key(user=user, name="laptop")


def call(key: str | None, scheme: str = "Bearer"):
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    return client.get("/whoami")


def assert_refused(response, message: str) -> None:
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def test_bearer_key_authenticates_its_user(issued):
    _, key = issued
    response = call(key)
    assert response.status_code == 200
    assert response.json() == {"user": "ada", "key": "laptop"}


def test_no_key(issued):
    assert_refused(call(None), "Authentication credentials were not provided.")


def test_another_scheme_is_not_ours(issued):
    _, key = issued
    assert_refused(call(key, scheme="Api-Key"), "Authentication credentials were not provided.")


def test_wrong_secret(issued):
    api_key, _ = issued
    assert_refused(call(f"{api_key.prefix}.{'x' * 32}"), "Incorrect API key provided.")


def test_unknown_prefix(issued):
    assert_refused(call("nosuchpx.secret"), "Incorrect API key provided.")


def test_not_a_key_at_all(issued):
    assert_refused(call("sk-proj-abc"), "Incorrect API key provided.")


def test_revoked_key_refused_at_once(issued):
    api_key, key = issued
    assert call(key).status_code == 200
    api_key.revoked = True
    api_key.save()
    assert_refused(call(key), "Incorrect API key provided.")


def test_expired_key(user):
    _, key = APIKey.objects.create_key(
        user=user, name="old", expiry_date=timezone.now() - timedelta(seconds=1)
    )
    assert_refused(call(key), "This API key has expired.")


def test_key_not_yet_expired(user):
    _, key = APIKey.objects.create_key(
        user=user, name="new", expiry_date=timezone.now() + timedelta(days=1)
    )
    assert call(key).status_code == 200


def test_inactive_user(issued, user):
    _, key = issued
    user.is_active = False
    user.save()
    assert_refused(call(key), "This API key's user is inactive.")


def test_last_used_at_set(issued):
    api_key, key = issued
    assert api_key.last_used_at is None
    before = timezone.now()
    call(key)
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None
    assert before <= api_key.last_used_at <= timezone.now()


def test_last_used_at_refreshed_when_stale(issued):
    api_key, key = issued
    long_ago = timezone.now() - timedelta(hours=1)
    APIKey.objects.filter(pk=api_key.pk).update(last_used_at=long_ago)
    call(key)
    api_key.refresh_from_db()
    assert api_key.last_used_at > long_ago + timedelta(minutes=59)


def test_key_stored_hashed(issued):
    api_key, key = issued
    prefix, secret = key.split(".")
    assert api_key.prefix == prefix
    row = APIKey.objects.filter(pk=api_key.pk).values().get()
    stored = " ".join(str(value) for value in row.values())
    assert secret not in stored
    assert key not in stored
    assert api_key.hashed_key.startswith("sha512$$")


def test_a_known_key_costs_no_query(issued, django_assert_num_queries):
    _, key = issued
    assert call(key).status_code == 200
    with django_assert_num_queries(0):
        assert call(key).json() == {"user": "ada", "key": "laptop"}


def test_a_user_deactivated_without_signals_is_refused_after_the_recheck(issued, user, monkeypatch):
    _, key = issued
    clock = [1000.0]
    monkeypatch.setattr(policy.time, "monotonic", lambda: clock[0])
    assert call(key).status_code == 200
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # sends no signal
    clock[0] += KEY_RECHECK_SECONDS
    assert_refused(call(key), "This API key's user is inactive.")


def test_a_login_keeps_the_cached_keys(issued, user, django_assert_num_queries):
    _, key = issued
    assert call(key).status_code == 200
    user.last_login = timezone.now()
    user.save(update_fields=["last_login"])
    with django_assert_num_queries(0):
        assert call(key).status_code == 200
