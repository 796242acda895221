"""The README's "Using quotas from your own code" snippets, run as written against a live
server standing in for the provider."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import RequestFactory

from quotas import upstream
from quotas.models import AIModel, Tier
from tests.event_loop import run_in_fresh_loop

from .conftest import ledger

README = Path(__file__).resolve().parents[2] / "README.md"


def snippets(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


@pytest.mark.django_db(transaction=True)
def test_own_code_snippets_run_as_written(settled_server, make_caller, monkeypatch, mock) -> None:
    account = make_caller("provider", allowed=())
    upstream.client()  # the live server's own provider stays the in-process mock
    monkeypatch.setenv("OPENAI_API_KEY", account.key)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{settled_server.url}/v1")
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


@pytest.mark.django_db(transaction=True)
def test_quick_start_honours_port_and_prints_no_none(
    settled_server, make_caller, monkeypatch, tmp_path, capsys
) -> None:
    embedding = AIModel.objects.create(name="text-embedding-3-small")
    caller = make_caller()
    Tier.objects.get(slug="tier-ada").allowed_models.add(embedding)
    (tmp_path / ".demo-api-key").write_text(caller.key + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", str(settled_server.thread.port))
    [block] = snippets("The two commands")
    exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    # Chat and Responses answers, each plain and streamed; the embeddings carry no text.
    assert printed.count("[mock]") == 4
    assert "None" not in printed
    assert "'gpt-4o-mini'" in printed
    assert ledger(caller.user)["requests"] == 5


def manage(project: Path, *args: str) -> str:
    """`python manage.py ARGS` in `project`, outside the suite's settings and database."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "QUOTAS_", "OPENAI_")) and k != "DATABASE_URL"
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


FIRST_CALL = """
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment

from quotas.models import AIModel, APIKey, Tier

setup_test_environment()
_, key = APIKey.objects.create_key(user=get_user_model().objects.create_user("ada"), name="k")
response = Client().post(
    "/v1/chat/completions",
    {"messages": [{"role": "user", "content": "Hello"}]},
    content_type="application/json",
    HTTP_AUTHORIZATION=f"Bearer {key}",
)
print(response.status_code, response.json()["model"], response.json()["choices"][0]["message"])
"""


@pytest.mark.slow
def test_existing_project_setup_works_in_a_fresh_project(tmp_path) -> None:
    blocks = snippets("Setup in an existing project")
    [settings_block] = [b for b in blocks if b.startswith("# settings.py")]
    [urls_block] = [b for b in blocks if b.startswith("# urls.py")]
    [models_block] = [b for b in blocks if "AIModel.objects.create" in b]
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)], check=True
    )
    settings_file = tmp_path / "mysite" / "settings.py"
    settings_file.write_text(
        settings_file.read_text()
        + settings_block
        # The embedded store, rather than a Redis the snippet names and the suite does not own.
        + 'QUOTAS["REDIS_URL"] = None\n'
    )
    urls_file = tmp_path / "mysite" / "urls.py"
    urls_file.write_text(urls_file.read_text() + urls_block)

    assert "no issues" in manage(tmp_path, "check")
    manage(tmp_path, "migrate", "--noinput")
    manage(tmp_path, "shell", "-c", models_block)
    answer = manage(tmp_path, "shell", "-c", FIRST_CALL)
    assert "200 gpt-4o-mini" in answer
    assert "[mock]" in answer
