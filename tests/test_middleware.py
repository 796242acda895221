from __future__ import annotations

import re

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from quotas.engine import Decision, LimitState
from quotas.middleware import RateLimitHeadersMiddleware
from quotas.models import Tier
from quotas.throttling import DECISION_ATTR, TierRateThrottle

RATE = LimitState("requests_per_minute", "rr", limit=5, used=1, remaining=4, reset_after=12)


class Plain(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [TierRateThrottle]

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [path("plain", Plain.as_view())]


def respond(request, response=None):
    return RateLimitHeadersMiddleware(lambda r: response or HttpResponse("ok"))(request)


def test_adds_the_headers_of_the_requests_decision():
    request = RequestFactory().get("/")
    setattr(request, DECISION_ATTR, Decision(True, None, 0.0, 0, states=(RATE,)))
    response = respond(request)
    assert response["RateLimit"] == '"requests_per_minute";r=4;t=12'
    assert response["x-ratelimit-remaining-requests"] == "4"
    assert response["x-ratelimit-reset-requests"] == "12s"


def test_keeps_headers_the_view_set():
    request = RequestFactory().get("/")
    setattr(request, DECISION_ATTR, Decision(True, None, 0.0, 0, states=(RATE,)))
    own = HttpResponse("ok", headers={"x-ratelimit-remaining-requests": "99"})
    assert respond(request, own)["x-ratelimit-remaining-requests"] == "99"


def test_nothing_without_a_decision():
    response = respond(RequestFactory().get("/"))
    assert "RateLimit" not in response
    assert "x-ratelimit-limit-requests" not in response


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_any_throttled_drf_view_gets_headers_on_200_and_429():
    Tier.objects.filter(is_default=True).update(requests_per_minute=60, burst=2)
    client = APIClient()
    first = client.get("/plain", REMOTE_ADDR="203.0.113.7")
    assert first.status_code == 200
    # The rate as set (60 a minute), not its burst of 2.
    assert first["RateLimit-Policy"] == (
        '"requests_per_minute";q=60;w=60, "requests_per_day";q=1000;w=86400'
    )
    assert re.fullmatch(
        r'"requests_per_minute";r=1;t=\d+, "requests_per_day";r=999;t=\d+', first["RateLimit"]
    )
    assert first["x-ratelimit-limit-requests"] == "60"
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert re.fullmatch(r"\d+(\.\d+)?s", first["x-ratelimit-reset-requests"])
    assert "Retry-After" not in first
    client.get("/plain", REMOTE_ADDR="203.0.113.7")
    denied = client.get("/plain", REMOTE_ADDR="203.0.113.7")
    assert denied.status_code == 429
    assert denied["x-ratelimit-remaining-requests"] == "0"
    assert int(denied["Retry-After"]) >= 1
