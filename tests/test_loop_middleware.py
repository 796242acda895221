"""Django's own middleware with their hooks on the event loop under ASGI: the answers
Django's classes give, without a thread per hook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
from django.contrib.auth import get_user_model
from django.middleware import security
from django.test import AsyncClient, Client

from quotaproject.loop_middleware import on_event_loop
from tests.event_loop import run_in_fresh_loop

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def as_asgi_py_serves(settings):
    """The middleware `asgi.py` serves with."""
    settings.MIDDLEWARE = on_event_loop(settings.MIDDLEWARE)


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("ops", password="pw-1234-long", is_staff=True)


def test_an_async_request_runs_the_hooks_on_the_event_loop(monkeypatch):
    threads: list[int] = []
    original = security.SecurityMiddleware.process_request

    def spy(self, request):
        threads.append(threading.get_ident())
        return original(self, request)

    monkeypatch.setattr(security.SecurityMiddleware, "process_request", spy)

    async def run():
        loop_thread = threading.get_ident()
        response = await AsyncClient().get("/v1/models")
        return loop_thread, response

    loop_thread, response = run_in_fresh_loop(run())
    assert response.status_code == 401  # the async view answered, as without a key
    assert threads == [loop_thread]


def test_an_async_answer_carries_what_djangos_middleware_adds():
    response = run_in_fresh_loop(AsyncClient().get("/admin/login/"))
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"  # clickjacking
    assert response["X-Content-Type-Options"] == "nosniff"  # security
    assert "csrftoken" in response.cookies  # CSRF
    assert re.search(r"\bCookie\b", response["Vary"])  # the session was read


def test_the_same_answer_under_wsgi():
    response = Client().get("/admin/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "csrftoken" in response.cookies


def test_a_login_under_asgi_saves_the_session_and_the_next_request_is_signed_in(staff):
    async def run():
        client = AsyncClient()
        login = await client.post(
            "/admin/login/?next=/admin/", {"username": "ops", "password": "pw-1234-long"}
        )
        admin = await client.get("/admin/")
        return login, admin

    login, admin = run_in_fresh_loop(run())
    assert login.status_code == 302
    assert "sessionid" in login.cookies
    assert admin.status_code == 200
    assert b"ops" in admin.content


def test_csrf_is_still_enforced_under_asgi(staff):
    async def run():
        client = AsyncClient(enforce_csrf_checks=True)
        return await client.post("/admin/login/", {"username": "ops", "password": "pw-1234-long"})

    response = run_in_fresh_loop(run())
    assert response.status_code == 403


def test_only_djangos_classes_are_replaced():
    names = ["django.middleware.security.SecurityMiddleware", "quotas.middleware.X", "a.B"]
    assert on_event_loop(names) == [
        "quotaproject.loop_middleware.SecurityMiddleware",
        "quotas.middleware.X",
        "a.B",
    ]


def test_the_asgi_application_serves_them():
    script = (
        "import json, quotaproject.asgi; from django.conf import settings; "
        "print(json.dumps(settings.MIDDLEWARE))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert "quotaproject.loop_middleware.SessionMiddleware" in served
    assert "django.contrib.sessions.middleware.SessionMiddleware" not in served
