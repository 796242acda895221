from __future__ import annotations

import io
import json
import re

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse
from django.test import AsyncRequestFactory, Client, RequestFactory
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from quotas.engine import Decision, LimitState
from quotas.middleware import MalformedRequestMiddleware, RateLimitHeadersMiddleware
from quotas.models import APIKey, Tier
from quotas.throttling import DECISION_ATTR, TierRateThrottle
from tests.event_loop import run_in_fresh_loop

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


def test_under_asgi_it_is_async_and_adds_the_headers_too():
    async def view(request):
        return HttpResponse("ok")

    middleware = RateLimitHeadersMiddleware(view)
    request = RequestFactory().get("/")
    setattr(request, DECISION_ATTR, Decision(True, None, 0.0, 0, states=(RATE,)))

    assert iscoroutinefunction(middleware)
    response = run_in_fresh_loop(middleware(request))
    assert response["x-ratelimit-remaining-requests"] == "4"


# Session keys under 8 characters are never looked up: these are.
NUL_SESSION = {"HTTP_COOKIE": 'sessionid="abcdefgh\\000ijklmnop"; csrftoken="x\\000"'}


@pytest.fixture
def anonymous() -> Client:
    return Client(raise_request_exception=False)


@pytest.fixture
def staff(db) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "status"), [("/v1/quota", 401), ("/admin/", 302), ("/api/schema/", 200)]
)
def test_a_session_cookie_holding_a_nul_byte_is_no_session(anonymous, path, status):
    response = anonymous.get(path, **NUL_SESSION)
    assert response.status_code == status


@pytest.mark.django_db
def test_a_nul_cookie_beside_a_valid_session_keeps_the_session(staff):
    staff.cookies["theme"] = "dark\x00"
    assert staff.get("/admin/").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/api/quotas/?tier=%00",
        "/api/tiers/a%00b/",
        "/api/keys/a%00b/",
        "/admin/quotas/usagerecord/dashboard/?q=%00",
        "/admin/auth/user/?q=a%00",
        "/v1/models/gpt%00",
    ],
)
def test_a_nul_byte_in_the_url_is_a_400(staff, url):
    response = staff.get(url)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_url"


@pytest.mark.django_db
def test_a_nul_byte_in_a_bearer_key_is_a_400(anonymous):
    user = get_user_model().objects.create(username="ada")
    _, key = APIKey.objects.create_key(user=user, name="k")
    response = anonymous.get("/v1/quota", HTTP_AUTHORIZATION=f"Bearer {key[:4]}\x00{key[4:]}")
    assert response.status_code == 400
    assert "Authorization header contains a NUL byte" in response.json()["error"]["message"]


def echo(request):
    return JsonResponse({"body": request.body.decode(), "length": request.META["CONTENT_LENGTH"]})


def chunked(body: bytes, *, decoded: bool) -> HttpResponse:
    environ = {"wsgi.input": io.BytesIO(body), "HTTP_TRANSFER_ENCODING": "chunked"}
    if decoded:
        environ["wsgi.input_terminated"] = True
    request = RequestFactory().generic("POST", "/", content_type="application/json", **environ)
    return MalformedRequestMiddleware(echo)(request)


def test_a_chunked_body_the_server_decoded_is_read():
    response = chunked(b'{"a": 1}', decoded=True)
    assert json.loads(response.content) == {"body": '{"a": 1}', "length": "8"}


def test_a_chunked_body_over_the_limit_is_a_413(settings):
    settings.QUOTAS = {"MAX_REQUEST_BYTES": 100_000}
    response = chunked(b"x" * 100_001, decoded=True)
    assert response.status_code == 413
    assert json.loads(response.content)["error"]["code"] == "request_too_large"


def test_a_chunked_body_the_server_left_encoded_is_a_411():
    response = chunked(b'8\r\n{"a": 1}\r\n0\r\n\r\n', decoded=False)
    assert response.status_code == 411
    assert "send a Content-Length header" in json.loads(response.content)["error"]["message"]


def test_under_asgi_a_chunked_body_is_read_and_a_nul_url_refused():
    async def echo_async(request):
        return echo(request)

    middleware = MalformedRequestMiddleware(echo_async)
    request = AsyncRequestFactory().generic(
        "POST",
        "/",
        b'{"a": 1}',
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
    )
    response = run_in_fresh_loop(middleware(request))
    assert json.loads(response.content)["body"] == '{"a": 1}'
    refused = run_in_fresh_loop(middleware(AsyncRequestFactory().get("/a%00b")))
    assert refused.status_code == 400


@pytest.mark.django_db
def test_a_chunked_body_reaches_the_staff_api(staff):
    body = json.dumps({"slug": "gold", "name": "Gold", "requests_per_minute": 5}).encode()
    response = staff.generic(
        "POST",
        "/api/tiers/",
        CONTENT_TYPE="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True},
    )
    assert response.status_code == 201, response.content
    assert Tier.objects.get(slug="gold").requests_per_minute == 5
