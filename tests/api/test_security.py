"""Abuse and privacy: secrets stay out of logs, callers only see themselves, admin keeps CSRF."""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from quotas.models import UsageRecord

pytestmark = pytest.mark.django_db

SECRET_PROMPT = "my-very-private-prompt-7431"


def test_no_api_key_or_prompt_in_logs(make_caller, mock, caplog):
    caller = make_caller("ada", tokens_per_day=10_000)
    client = caller.client()
    # What a deployment logs (INFO and up), and everything of our own logger.
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="quotas"):
        for body in (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
            {"model": "nope", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": SECRET_PROMPT}],
                "stream": True,
            },
        ):
            response = client.post("/v1/chat/completions", body, format="json")
            b"".join(response.streaming_content if response.streaming else [response.content])
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {caller.key}x")
        assert client.get("/v1/quota").status_code == 401
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # the requests were logged...
    assert caller.key not in logged  # ...without the key
    assert caller.key.split(".")[1] not in logged
    assert SECRET_PROMPT not in logged  # ...and without the prompt


def test_prompts_and_completions_are_not_stored(make_caller, mock):
    caller = make_caller("ada")
    response = caller.client().post(
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": SECRET_PROMPT}]},
        format="json",
    )
    assert response.status_code == 200
    from django.db import connection

    with connection.cursor() as cursor:
        for model in (UsageRecord,):
            cursor.execute(f"SELECT * FROM {model._meta.db_table}")
            assert SECRET_PROMPT not in json.dumps(cursor.fetchall(), default=str)


def test_a_caller_only_ever_sees_their_own_quota(make_caller, mock):
    ada = make_caller("ada", tokens_per_day=10_000)
    bob = make_caller("bob", tokens_per_day=20_000)
    ada.client().post(
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    bob_view = bob.client().get("/v1/quota", {"user": ada.user.pk}).json()
    assert bob_view["limits"]["tokens_per_day"]["limit"] == 20_000
    assert bob_view["usage"]["today"]["tokens"] == 0  # none of ada's usage
    ada_view = ada.client().get("/v1/quota").json()
    assert ada_view["usage"]["today"]["tokens"] > 0


def test_staff_api_refuses_non_staff_callers(make_caller):
    caller = make_caller("ada")
    for path in ("/api/tiers/", "/api/quotas/", "/api/keys/", "/api/usage/"):
        response = caller.client().get(path)
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "permission_error"


def test_admin_keeps_csrf(db):
    get_user_model().objects.create_superuser("root", password="pw-123456")
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="root", password="pw-123456")
    response = client.post("/admin/quotas/tier/add/", {"slug": "x", "name": "X"})
    assert response.status_code == 403
