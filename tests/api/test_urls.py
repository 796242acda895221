"""The /v1/ URLs: every endpoint routed, anything else a JSON 404 in OpenAI's error shape."""

from __future__ import annotations

import json

import openai
import pytest

from .test_chat_stream import Raw

live = pytest.mark.django_db(transaction=True)


@live
def test_sdk_gets_a_json_404_for_an_unknown_path(make_caller, sdk, mock) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk(make_caller()).post("/fine_tuning/jobs", cast_to=object, body={"model": "gpt-4o"})

    assert missing.value.body["code"] == "unknown_url"
    assert missing.value.body["type"] == "invalid_request_error"
    assert mock.calls == 0


@live
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/responses/"),
        ("POST", "/v1/embeddings/"),
        ("POST", "/v1/chat/completions/"),
        ("DELETE", "/v1/files/file-1"),
        ("PUT", "/v1"),
        ("GET", "/v1/models/"),
    ],
)
def test_any_other_path_and_method_is_a_json_404(
    make_caller, settled_server, mock, method, path
) -> None:
    response = Raw(settled_server.url, make_caller()).open(method, path, {"input": "hi"})

    assert response.status == 404
    assert response.getheader("Content-Type") == "application/json"
    error = json.loads(response.read())["error"]
    assert error["code"] == "unknown_url"
    assert path in error["message"]


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/embeddings"])
def test_a_get_on_a_post_endpoint_is_a_json_405(make_caller, mock, path) -> None:
    response = make_caller().client().get(path)

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
