"""Provider usage read the same way for chat, Responses and embeddings, objects or dicts."""

from __future__ import annotations

from openai.types import CompletionUsage, CreateEmbeddingResponse
from openai.types.responses import ResponseUsage

from quotas.usage import TokenUsage, normalise_usage


def test_chat_usage_object_with_cached_and_reasoning_tokens() -> None:
    usage = CompletionUsage(
        prompt_tokens=120,
        completion_tokens=30,
        total_tokens=150,
        prompt_tokens_details={"cached_tokens": 100},
        completion_tokens_details={"reasoning_tokens": 12},
    )

    assert normalise_usage(usage) == TokenUsage(120, 30, 100, 12)


def test_responses_usage_object() -> None:
    usage = ResponseUsage(
        input_tokens=50,
        output_tokens=7,
        total_tokens=57,
        input_tokens_details={"cached_tokens": 0, "cache_write_tokens": 0},
        output_tokens_details={"reasoning_tokens": 3},
    )

    assert normalise_usage(usage) == TokenUsage(50, 7, 0, 3)


def test_embeddings_usage_has_no_completion() -> None:
    reply = CreateEmbeddingResponse(
        data=[],
        model="text-embedding-3-small",
        object="list",
        usage={"prompt_tokens": 9, "total_tokens": 9},
    )

    assert normalise_usage(reply.usage)[:2] == (9, 0)


def test_bad_figures_are_unknown_not_charged() -> None:
    usage = {"prompt_tokens": -4, "completion_tokens": "12", "total_tokens": True}

    assert normalise_usage(usage) == TokenUsage()
    assert normalise_usage(None) == TokenUsage()
