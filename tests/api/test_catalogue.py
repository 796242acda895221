"""GET /v1/models/{id}: the models the caller's tier may use, one at a time."""

from __future__ import annotations

import openai
import pytest

from quotas.models import AIModel

live = pytest.mark.django_db(transaction=True)


@live
def test_sdk_retrieves_an_allowed_model(make_caller, sdk, mock) -> None:
    model = sdk(make_caller()).models.retrieve("gpt-4o")

    assert (model.id, model.object) == ("gpt-4o", "model")
    assert mock.calls == 0


@live
@pytest.mark.parametrize("name", ["gpt-9", "gpt-4.1-mini"], ids=["unknown", "not-allowed"])
def test_sdk_gets_a_404_for_a_model_it_may_not_use(make_caller, sdk, mock, name) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk(make_caller()).models.retrieve(name)

    assert missing.value.body["code"] == "model_not_found"
    assert missing.value.body["param"] == "model"
    assert name in missing.value.body["message"]


def test_an_id_with_a_slash_is_one_model(make_caller, catalogue, mock) -> None:
    AIModel.objects.create(name="meta-llama/Llama-3.1-8B-Instruct")
    caller = make_caller(allowed=())  # every active model

    found = caller.client().get("/v1/models/meta-llama/Llama-3.1-8B-Instruct")
    inactive = AIModel.objects.filter(name="gpt-4o").update(active=False)
    from quotas import policy

    policy.cache.clear()
    gone = caller.client().get("/v1/models/gpt-4o")

    assert found.status_code == 200
    assert found.json()["id"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert inactive == 1
    assert gone.status_code == 404


def test_without_a_key_it_is_a_401(client, db) -> None:
    response = client.get("/v1/models/gpt-4o")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
