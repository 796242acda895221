"""POST /v1/embeddings through the official openai SDK: every input shape, reserved as its
counted input and settled from the provider's usage."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quotas.models import AIModel, UsageRecord
from quotas.tokens import count_text_tokens

from .conftest import ledger

URL = "/v1/embeddings"
MODEL = "text-embedding-3-small"
live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def embedder(catalogue):
    """The embedding model, in the catalogue the callers' tiers are made from."""
    catalogue[MODEL] = AIModel.objects.create(name=MODEL, input_price_per_million=Decimal(1))
    return catalogue[MODEL]


@pytest.fixture
def caller(make_caller, embedder):
    return make_caller(allowed=("gpt-4o-mini", MODEL), tokens_per_day=10_000)


def tokens(text: str) -> int:
    return count_text_tokens(text, MODEL)


@live
@pytest.mark.parametrize(
    ("given", "count", "expected"),
    [
        ("The food was delicious", 1, tokens("The food was delicious")),
        (["The food", "was delicious"], 2, tokens("The food") + tokens("was delicious")),
        ([1820, 25977, 6206], 1, 3),
        ([[1820, 25977], [6206]], 2, 3),
    ],
    ids=["string", "strings", "tokens", "token-arrays"],
)
def test_sdk_embeddings_of_each_input_shape(caller, sdk, mock, given, count, expected) -> None:
    result = sdk(caller).embeddings.create(model=MODEL, input=given)

    assert [item.index for item in result.data] == list(range(count))
    assert {len(item.embedding) for item in result.data} == {1536}
    assert isinstance(result.data[0].embedding[0], float)
    assert result.usage.prompt_tokens == expected
    assert ledger(caller.user, model=MODEL) == {
        "requests": 1,
        "prompt": expected,
        "completion": 0,
        "denied": 0,
    }
    row = UsageRecord.objects.get(user=caller.user, model=MODEL)
    assert row.cost == Decimal(expected) / 1_000_000  # USD 1 per million input tokens


def test_floats_are_answered_unless_base64_is_asked(caller, mock) -> None:
    client = caller.client()

    floats = client.post(URL, {"model": MODEL, "input": "hi", "dimensions": 8}, format="json")
    packed = client.post(
        URL, {"model": MODEL, "input": "hi", "encoding_format": "base64"}, format="json"
    )

    assert floats.status_code == 200
    assert len(floats.json()["data"][0]["embedding"]) == 8
    assert isinstance(packed.json()["data"][0]["embedding"], str)


def test_the_reservation_is_the_counted_input(make_caller, embedder, mock) -> None:
    client = make_caller(allowed=(MODEL,), default=None, tokens_per_day=5).client()

    fits = client.post(URL, {"model": MODEL, "input": [1, 2, 3, 4, 5]}, format="json")
    too_long = client.post(URL, {"model": MODEL, "input": [1, 2, 3, 4, 5, 6]}, format="json")
    out = client.post(URL, {"model": MODEL, "input": [1]}, format="json")

    assert fits.status_code == 200  # the output cap of chat plays no part
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert out.status_code == 429
    assert mock.calls == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": ""}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": [[]]}, "input"),
        ({"model": MODEL, "input": [-1]}, "input"),
        ({"model": MODEL, "input": ["a", [1]]}, "input"),
        ({"model": MODEL, "input": {"text": "a"}}, "input"),
        ({"model": MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "a", "dimensions": 0}, "dimensions"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(caller, mock, body, param) -> None:
    response = caller.client().post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert mock.calls == 0


def test_a_model_the_tier_does_not_allow_is_refused(make_caller, embedder, mock) -> None:
    caller = make_caller()  # gpt-4o and gpt-4o-mini only

    response = caller.client().post(URL, {"model": MODEL, "input": "hi"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_allowed"


def test_the_fallback_model_never_serves_embeddings(make_caller, embedder, mock) -> None:
    """A caller running low is not sent to the tier's (chat) fallback model."""
    caller = make_caller(
        allowed=("gpt-4o", "gpt-4o-mini", MODEL),
        fallback="gpt-4o-mini",
        degrade_at_percent=100,
        tokens_per_day=10_000,
    )
    client = caller.client()
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    served = [client.post("/v1/chat/completions", chat, format="json").json() for _ in "ab"]
    assert [reply["model"] for reply in served] == ["gpt-4o", "gpt-4o-mini"]  # running low

    response = client.post(URL, {"model": MODEL, "input": "hi"}, format="json")

    assert response.status_code == 200
    assert response.json()["model"] == MODEL
    assert mock.last_request["model"] == MODEL
    assert ledger(caller.user, model=MODEL)["requests"] == 1


def test_the_provider_failing_refunds_and_answers_502(caller, mock) -> None:
    mock.fail = "500"

    response = caller.client().post(URL, {"model": MODEL, "input": "hi"}, format="json")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert ledger(caller.user)["requests"] == 0
