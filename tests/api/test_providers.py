"""Models routed to a second provider: a live OpenAI-compatible stub on its own port,
called with the key from the environment variable its `Provider` names."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

from quotas import upstream
from quotas.mock_provider import MockTransport, httpx
from quotas.models import AIModel, Provider

from .conftest import ledger

HELLO = [{"role": "user", "content": "Hello there"}]
live = pytest.mark.django_db(transaction=True)


class Stub:
    """An OpenAI-compatible server on a free port: the mock provider over real HTTP."""

    def __init__(self) -> None:
        self.transport = MockTransport(latency=0.0, fail="")
        self.authorizations: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.authorizations.append(self.headers.get("Authorization", ""))
                request = httpx.Request(
                    self.command,
                    f"http://stub{self.path}",
                    headers=dict(self.headers),
                    content=body,
                )
                response = stub.transport.handle_request(request)
                content = response.read()
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers["content-type"])
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()
    upstream.reset_client()


@pytest.fixture
def routed(stub: Stub, catalogue: dict[str, AIModel], monkeypatch: pytest.MonkeyPatch) -> AIModel:
    """gpt-4.1-mini routed to the stub, its key in STUB_API_KEY."""
    monkeypatch.setenv("STUB_API_KEY", "sk-stub-secret")
    provider = Provider.objects.create(
        name="stub", base_url=stub.url, api_key_env="STUB_API_KEY", timeout=5
    )
    model = catalogue["gpt-4.1-mini"]
    model.provider = provider
    model.save()
    return model


@live
def test_a_model_is_routed_to_its_provider_with_its_key(
    make_caller, routed, stub, mock, sdk
) -> None:
    caller = make_caller(allowed=("gpt-4o-mini", "gpt-4.1-mini"), tokens_per_day=10_000)
    client = sdk(caller)

    routed_reply = client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    default_reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    response = client.responses.create(model="gpt-4.1-mini", input="Hi", max_output_tokens=5)

    assert routed_reply.choices[0].message.content.startswith("[mock]")
    assert stub.transport.calls == 2  # the chat completion and the response
    assert stub.authorizations == ["Bearer sk-stub-secret"] * 2
    assert mock.calls == 1  # gpt-4o-mini: the default provider
    assert default_reply.model == "gpt-4o-mini"
    assert response.usage.output_tokens <= 5
    assert ledger(caller.user, model="gpt-4.1-mini")["requests"] == 2


def test_a_provider_without_its_key_is_a_503_naming_the_variable(
    make_caller, routed, stub, mock, monkeypatch
) -> None:
    monkeypatch.delenv("STUB_API_KEY")
    caller = make_caller(allowed=("gpt-4.1-mini",), default="gpt-4.1-mini", requests_per_day=5)

    response = caller.client().post("/v1/chat/completions", {"messages": HELLO}, format="json")

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "provider_not_configured"
    assert "STUB_API_KEY" in error["message"]
    assert "sk-stub-secret" not in response.content.decode()
    assert stub.transport.calls == 0
    assert ledger(caller.user)["requests"] == 0  # refunded


def test_the_provider_timeout_applies_to_its_calls(make_caller, routed, stub, mock) -> None:
    Provider.objects.filter(name="stub").update(timeout=0.2)
    stub.transport.latency = 1.0
    caller = make_caller(allowed=("gpt-4.1-mini",), default="gpt-4.1-mini")

    response = caller.client().post("/v1/chat/completions", {"messages": HELLO}, format="json")

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


def test_a_local_endpoint_needs_no_key(routed, stub, mock) -> None:
    Provider.objects.filter(name="stub").update(api_key_env="")

    client = upstream.client(Provider.objects.get(name="stub"))

    assert str(client.base_url).rstrip("/") == stub.url
    assert client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO).choices
    assert isinstance(client, openai.OpenAI)
