from __future__ import annotations

import pytest

from quotas.exceptions import InvalidRequest
from quotas.unpriced import check_priced


@pytest.mark.parametrize(
    ("tools", "params", "param"),
    [
        (None, {"service_tier": "priority"}, "service_tier"),
        (None, {"service_tier": "scale"}, "service_tier"),
        (None, {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        (None, {"modalities": ["text", "audio"]}, "modalities"),
        (None, {"web_search_options": {}}, "web_search_options"),
        (None, {"prediction": {"type": "content", "content": "x"}}, "prediction"),
        (None, {"store": True}, "store"),
        (None, {"background": True}, "background"),
        ([{"type": "web_search_preview"}], {}, "tools"),
        ([{"type": "function", "name": "f"}, {"type": "file_search"}], {}, "tools"),
    ],
)
def test_what_changes_the_bill_is_refused_naming_the_parameter(tools, params, param) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_priced(tools, params)

    assert refused.value.param == param
    assert refused.value.code == "unsupported_parameter"


@pytest.mark.parametrize(
    "params",
    [
        {"service_tier": "auto"},
        {"service_tier": "flex"},
        {"modalities": ["text"]},
        {"store": False},
        {"background": False},
    ],
)
def test_what_the_catalogue_prices_passes(params) -> None:
    check_priced([{"type": "function", "name": "lookup"}], params)
