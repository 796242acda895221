"""The README's "Using quotas from your own code" snippets, run as written against a live
server standing in for the provider."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import RequestFactory

from quotas import upstream
from tests.event_loop import run_in_fresh_loop

from .conftest import ledger

README = Path(__file__).resolve().parents[2] / "README.md"


def snippets(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


@pytest.mark.django_db(transaction=True)
def test_own_code_snippets_run_as_written(live_server, make_caller, monkeypatch, mock) -> None:
    account = make_caller("provider", allowed=())
    upstream.client()  # the live server's own provider stays the in-process mock
    monkeypatch.setenv("OPENAI_API_KEY", account.key)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{live_server.url}/v1")
    caller = make_caller(requests_per_day=6, tokens_per_day=100_000)
    namespace: dict = {}
    blocks = snippets("Using quotas from your own code")
    assert len(blocks) == 4
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)

    assert namespace["summarise"](caller.user, "a long text").startswith("[mock]")
    request = RequestFactory().get("/reply", {"q": "Thanks!"})
    request.user = caller.user
    response = namespace["draft_reply"](request)
    assert response.status_code == 200
    assert namespace["nightly_digest"](caller.user.pk, ["a", "b"]) == 2
    assert run_in_fresh_loop(namespace["answer"](caller.user, "Why?")).startswith("[mock]")
    run_in_fresh_loop(namespace["classify"](caller.user, "spam?"))

    assert ledger(caller.user)["requests"] == 6
    assert namespace["nightly_digest"](caller.user.pk, ["c"]) == 0  # requests_per_day is used up
    assert namespace["draft_reply"](request).status_code == 429
