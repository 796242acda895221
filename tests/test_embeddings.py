from __future__ import annotations

import pytest

from quotas.embeddings import MAX_INPUTS, input_tokens, inputs, reserve_arguments
from quotas.exceptions import InvalidRequest
from quotas.tokens import count_text_tokens

MODEL = "text-embedding-3-small"


def test_each_input_shape_is_counted_as_the_provider_bills_it() -> None:
    assert input_tokens("hello world", MODEL) == count_text_tokens("hello world", MODEL)
    assert input_tokens(["a cat", "a dog"], MODEL) == 2 * count_text_tokens("a cat", MODEL)
    assert input_tokens([5, 6, 7], MODEL) == 3
    assert input_tokens([[5, 6], [7]], MODEL) == 3


def test_the_reservation_is_exactly_the_input_and_never_the_fallback() -> None:
    assert reserve_arguments({"model": MODEL, "input": [1, 2, 3, 4]}) == {
        "model": MODEL,
        "tokens": 4,
        "fallback": False,
    }


@pytest.mark.parametrize(
    "given", [None, "", [], [""], [[]], [1.5], [True], ["a", [1]], {"a": 1}, 7]
)
def test_anything_else_is_refused_naming_input(given: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        inputs(given)
    assert refused.value.param == "input"


def test_too_many_inputs_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="more than 2048"):
        inputs(["a"] * (MAX_INPUTS + 1))
