"""`/v1/` and `/api/` fuzzed from the OpenAPI schema: no input makes them answer 500.

Each generated request is sent with the key of a caller (`/v1/`) or of staff (`/api/`),
then without a key beside a session cookie holding a NUL byte."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from quotas.models import AIModel, APIKey, Tier, UserQuota


def _openapi() -> dict:
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(json.dumps(document, default=str))


schema = schemathesis.openapi.from_dict(_openapi())
STALE_SESSION = 'sessionid="abcdefgh\\000ijklmnop"'
schema.app = get_wsgi_application()


@pytest.fixture
def keys(django_user_model) -> dict[str, str]:
    model = AIModel.objects.create(name="gpt-4o-mini")
    tier = Tier.objects.create(
        slug="fuzz", name="Fuzz", requests_per_minute=100_000, burst=100_000, default_model=model
    )
    tier.allowed_models.set([model])
    staff = django_user_model.objects.create(username="staff", is_staff=True, is_superuser=True)
    caller = django_user_model.objects.create(username="caller")
    for user in (staff, caller):
        UserQuota.objects.create(user=user, tier=tier)
    return {
        "staff": APIKey.objects.create_key(user=staff, name="fuzz")[1],
        "caller": APIKey.objects.create_key(user=caller, name="fuzz")[1],
    }


@pytest.fixture(autouse=True)
def keep_test_connection():
    """Calling the WSGI app directly would close the test transaction's connection."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_answers_500(case, keys):
    who = "staff" if case.path.startswith("/api/") else "caller"
    response = case.call(headers={"Authorization": f"Bearer {keys[who]}"})
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    # Without a key, a stale session cookie holding a NUL byte is no session: refused
    # (or not found), never served and never a 500.
    response = case.call(headers={"Cookie": STALE_SESSION})
    assert 400 <= response.status_code < 500, (case.method, case.path, response.text[:300])
