"""Bad requests to /v1/chat/completions: an OpenAI-shaped error, and nothing spent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from quotas.models import APIKey, Tier

from .conftest import Caller, ledger

pytestmark = pytest.mark.django_db

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]
# The tier of these tests: one request a day, so any bad request charged would show.
LIMITS = {"requests_per_day": 1, "tokens_per_day": 1000, "max_tokens_per_request": 500}


@pytest.fixture
def caller(make_caller) -> Caller:
    return make_caller(**LIMITS)


def post(client: APIClient, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(URL, raw, content_type="application/json")


def assert_error(response: Any, status: int, type_: str, param: str | None, code: str) -> str:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (type_, param, code)
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


def assert_nothing_spent(caller: Caller, mock) -> None:
    """The provider was not called, and the day's one request is still there to use."""
    assert mock.calls == 0
    assert ledger(caller.user)["requests"] == 0
    good = post(caller.client(), {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 5})
    assert good.status_code == 200, good.content
    assert mock.calls == 1


LONG_PROMPT = [{"role": "user", "content": "quota " * 600}]

BAD_BODIES = [
    pytest.param(b"{not json", None, "invalid_json", "JSON", id="invalid-json"),
    pytest.param(b"\xff\xfe", None, "invalid_json", "JSON", id="not-utf8"),
    pytest.param(b"", None, "invalid_json", "JSON", id="empty-body"),
    pytest.param(b'[{"role": "user"}]', None, "invalid_json", "object", id="array-body"),
    pytest.param(b'"hello"', None, "invalid_json", "object", id="string-body"),
    pytest.param({"model": "gpt-4o-mini"}, "messages", "missing", "messages", id="no-messages"),
    pytest.param({"messages": None}, "messages", "missing", "messages", id="null-messages"),
    pytest.param({"messages": []}, "messages", "empty_array", "messages", id="empty-messages"),
    pytest.param({"messages": "Hello"}, "messages", "invalid_type", "messages", id="str-messages"),
    pytest.param({"messages": {"role": "user"}}, "messages", "invalid_type", "messages", id="obj"),
    pytest.param({"messages": ["Hello"]}, "messages[0]", "invalid_type", "messages[0]", id="item"),
    pytest.param(
        {"messages": [{"content": "Hello"}]},
        "messages[0].role",
        "invalid_value",
        "role",
        id="no-role",
    ),
    pytest.param(
        {"messages": [*HELLO, {"role": "wizard", "content": "Hi"}]},
        "messages[1].role",
        "invalid_value",
        "role",
        id="unknown-role",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": 42}]},
        "messages[0].content",
        "invalid_type",
        "content",
        id="number-content",
    ),
    pytest.param(
        {"messages": [{"role": "user"}]},
        "messages[0].content",
        "invalid_type",
        "content",
        id="no-content",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": ["Hello"]}]},
        "messages[0].content",
        "invalid_type",
        "content",
        id="parts-not-objects",
    ),
    pytest.param(
        {"messages": HELLO, "model": "gpt-9"}, "model", "model_not_found", "gpt-9", id="unknown"
    ),
    pytest.param(
        {"messages": HELLO, "model": "gpt-4.1-mini"},
        "model",
        "model_not_allowed",
        "gpt-4.1-mini",
        id="model-not-allowed",
    ),
    pytest.param({"messages": HELLO, "model": 4}, "model", "invalid_type", "model", id="int-model"),
    pytest.param(
        {"messages": HELLO, "max_tokens": 501},
        "max_tokens",
        "max_tokens_exceeded",
        "500",
        id="max-tokens-over-cap",
    ),
    pytest.param(
        {"messages": HELLO, "max_completion_tokens": 501},
        "max_completion_tokens",
        "max_tokens_exceeded",
        "500",
        id="max-completion-tokens-over-cap",
    ),
    pytest.param(
        {"messages": HELLO, "max_tokens": 0},
        "max_tokens",
        "invalid_value",
        "max_tokens",
        id="max-tokens-zero",
    ),
    pytest.param(
        {"messages": HELLO, "max_tokens": -5},
        "max_tokens",
        "invalid_value",
        "max_tokens",
        id="max-tokens-negative",
    ),
    pytest.param(
        {"messages": HELLO, "max_tokens": "100"},
        "max_tokens",
        "invalid_value",
        "max_tokens",
        id="max-tokens-string",
    ),
    pytest.param(
        {"messages": HELLO, "max_tokens": 10.5},
        "max_tokens",
        "invalid_value",
        "max_tokens",
        id="max-tokens-float",
    ),
    pytest.param(
        {"messages": HELLO, "max_tokens": True},
        "max_tokens",
        "invalid_value",
        "max_tokens",
        id="max-tokens-bool",
    ),
    pytest.param({"messages": HELLO, "n": 0}, "n", "invalid_value", "'n'", id="n-zero"),
    pytest.param({"messages": HELLO, "n": 17}, "n", "invalid_value", "'n'", id="n-17"),
    pytest.param({"messages": HELLO, "n": "2"}, "n", "invalid_value", "'n'", id="n-string"),
    pytest.param(
        {"messages": HELLO, "stream": "true"}, "stream", "invalid_type", "stream", id="stream-str"
    ),
    pytest.param(
        {"messages": HELLO, "stream": 1}, "stream", "invalid_type", "stream", id="stream-int"
    ),
    pytest.param(
        {"messages": HELLO, "stream": True, "stream_options": "usage"},
        "stream_options",
        "invalid_type",
        "stream_options",
        id="stream-options",
    ),
    pytest.param(
        {"messages": HELLO, "temperature": "hot"},
        "temperature",
        "invalid_type",
        "temperature",
        id="temperature",
    ),
    pytest.param({"messages": HELLO, "stop": [1]}, "stop", "invalid_type", "stop", id="stop"),
    pytest.param({"messages": HELLO, "user": 7}, "user", "invalid_type", "user", id="user"),
    pytest.param(
        {"messages": LONG_PROMPT, "max_tokens": 500},
        "messages",
        "context_length_exceeded",
        "tokens_per_day",
        id="over-the-whole-day-budget",
    ),
    pytest.param(
        {"messages": HELLO, "max_tokens": 500, "n": 2},
        "messages",
        "context_length_exceeded",
        "tokens_per_day",
        id="n-times-max-tokens-over-the-day-budget",
    ),
]


@pytest.mark.parametrize(("body", "param", "code", "named"), BAD_BODIES)
def test_bad_request_is_a_400_naming_the_field(caller, mock, body, param, code, named) -> None:
    response = post(caller.client(), body)

    message = assert_error(response, 400, "invalid_request_error", param, code)
    assert named in message
    assert_nothing_spent(caller, mock)


def test_body_over_max_request_bytes_is_a_413(caller, mock, settings) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "MAX_REQUEST_BYTES": 2048}
    body = {"messages": [{"role": "user", "content": "x" * 2048}], "max_tokens": 5}

    response = post(caller.client(), body)

    message = assert_error(response, 413, "invalid_request_error", None, "request_too_large")
    assert "2048 bytes" in message
    assert_nothing_spent(caller, mock)


def test_body_just_under_max_request_bytes_is_served(caller, mock, settings) -> None:
    body = json.dumps({"messages": HELLO, "max_tokens": 5}).encode()
    settings.QUOTAS = {**settings.QUOTAS, "MAX_REQUEST_BYTES": len(body)}

    assert post(caller.client(), body).status_code == 200


def test_without_a_key_is_a_401(caller, mock) -> None:
    response = post(APIClient(), {"messages": HELLO})

    assert_error(response, 401, "invalid_request_error", None, "invalid_api_key")
    assert mock.calls == 0


def test_with_a_wrong_key_is_a_401(caller, mock) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {caller.key[:-4]}xxxx")

    response = post(client, {"messages": HELLO})

    message = assert_error(response, 401, "invalid_request_error", None, "invalid_api_key")
    assert message == "Incorrect API key provided."
    assert mock.calls == 0


def test_blocked_user_is_a_403(make_caller, mock) -> None:
    caller = make_caller(blocked=True)

    response = post(caller.client(), {"messages": HELLO})

    assert_error(response, 403, "permission_error", None, "blocked")
    assert mock.calls == 0
    assert ledger(caller.user)["requests"] == 0


@pytest.mark.parametrize("path", [URL, "/v1/models", "/v1/models/gpt-4o", "/v1/quota"])
def test_without_a_default_tier_a_caller_with_no_tier_is_a_403(catalogue, mock, path) -> None:
    user = get_user_model().objects.create_user("nobody")  # no quota: the default tier's
    _, key = APIKey.objects.create_key(user=user, name="test")
    Tier.objects.update(is_default=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    response = post(client, {"messages": HELLO}) if path == URL else client.get(path)

    message = assert_error(response, 403, "permission_error", None, "no_tier")
    assert "no default tier" in message
    assert mock.calls == 0
    assert ledger(user)["requests"] == 0


@pytest.mark.parametrize("path", ["/v1/embeddings/", "/v1/chat/completion", "/v1/", "/v1"])
def test_unknown_v1_path_is_a_404_in_json(caller, mock, path) -> None:
    response = caller.client().get(path)

    assert response["Content-Type"] == "application/json"
    message = assert_error(response, 404, "invalid_request_error", None, "unknown_url")
    assert path in message
    assert mock.calls == 0


def test_get_on_chat_completions_is_a_405_in_json(caller, mock) -> None:
    response = caller.client().get(URL)

    assert_error(response, 405, "invalid_request_error", None, "method_not_allowed")
    assert mock.calls == 0


# input that used to reach the provider, or the counters, unchecked ----------------------

NESTED = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
SURROGATE_MODEL = b'{"model": "x\\ud800", "messages": [{"role": "user", "content": "hi"}]}'
SURROGATE_CONTENT = b'{"messages": [{"role": "user", "content": "hi \\udfff"}]}'
NAN = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
HUGE = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}'


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        pytest.param(NESTED, None, id="nested-100000-levels"),
        pytest.param(SURROGATE_MODEL, "model", id="lone-surrogate-in-model"),
        pytest.param(SURROGATE_CONTENT, "messages[0].content", id="lone-surrogate-in-content"),
        pytest.param(NAN, None, id="temperature-nan"),
        pytest.param(HUGE, None, id="temperature-1e999"),
    ],
)
def test_malformed_json_is_a_400(caller, mock, raw, param) -> None:
    response = post(caller.client(), raw)

    assert_error(response, 400, "invalid_request_error", param, "invalid_json")
    assert_nothing_spent(caller, mock)


def test_max_tokens_of_2_to_the_60_is_a_400_on_an_unlimited_tier(make_caller, mock) -> None:
    caller = make_caller()  # no limits at all

    response = post(caller.client(), {"messages": HELLO, "max_tokens": 2**60})

    message = assert_error(response, 400, "invalid_request_error", "max_tokens", "invalid_value")
    assert "10,000,000" in message
    assert mock.calls == 0
    assert post(caller.client(), {"messages": HELLO, "max_tokens": 5}).status_code == 200


def test_the_larger_of_both_output_caps_is_checked(make_caller, mock) -> None:
    caller = make_caller(max_tokens_per_request=50)

    response = post(
        caller.client(), {"messages": HELLO, "max_tokens": 5000, "max_completion_tokens": 1}
    )

    assert_error(response, 400, "invalid_request_error", "max_tokens", "max_tokens_exceeded")
    assert mock.calls == 0


def test_exactly_one_output_cap_is_forwarded(make_caller, mock) -> None:
    caller = make_caller(max_tokens_per_request=50)

    response = post(
        caller.client(), {"messages": HELLO, "max_tokens": 20, "max_completion_tokens": 3}
    )

    assert response.status_code == 200
    assert mock.last_request["max_completion_tokens"] == 20
    assert "max_tokens" not in mock.last_request


def test_tool_definitions_count_against_the_budget(make_caller, mock) -> None:
    """A 900 KB tool definition against a 1,000-token day is refused before the provider."""
    caller = make_caller(tokens_per_day=1_000)
    tool = {"type": "function", "function": {"name": "big", "description": "word " * 180_000}}

    response = post(caller.client(), {"messages": HELLO, "tools": [tool], "max_tokens": 5})

    message = assert_error(
        response, 400, "invalid_request_error", "messages", "context_length_exceeded"
    )
    assert "tokens_per_day" in message
    assert mock.calls == 0
    assert ledger(caller.user)["requests"] == 0


def test_response_format_schemas_are_reserved(make_caller, mock) -> None:
    caller = make_caller(tokens_per_day=1_000)
    schema = {"type": "json_schema", "json_schema": {"name": "s", "description": "x " * 2_000}}

    response = post(
        caller.client(), {"messages": HELLO, "response_format": schema, "max_tokens": 5}
    )

    assert_error(response, 400, "invalid_request_error", "messages", "context_length_exceeded")
    assert mock.calls == 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy"}}, "audio"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"prediction": {"type": "content", "content": "draft"}}, "prediction"),
        ({"store": True}, "store"),
    ],
)
def test_parameters_that_change_the_bill_are_refused(make_caller, mock, extra, param) -> None:
    caller = make_caller()

    response = post(caller.client(), {"messages": HELLO, **extra})

    assert_error(response, 400, "invalid_request_error", param, "unsupported_parameter")
    assert mock.calls == 0
