"""Request parameters that change the provider's bill in ways the catalogue does not price.

Each is refused with a 400 naming it (code `unsupported_parameter`), so no call is billed
differently from what was reserved and settled:

- `service_tier` other than `auto`, `default` or `flex`: priority and scale processing
  are billed above the catalogue's prices.
- `audio`, or `modalities` with `"audio"`: audio tokens are billed at their own rates.
- `web_search_options`, and Responses tools of the built-in kinds (web and file search,
  code interpreter, image generation, computer use): billed per call on top of tokens.
- `prediction`: rejected predicted tokens are billed as output beyond `max_tokens`.
- `store: true`: a stored answer can be continued later, outside the reserved estimate.
- `background: true`: the answer, and its usage, arrive after the call has been settled.
"""

from __future__ import annotations

from typing import Any

from .exceptions import InvalidRequest

PRICED_SERVICE_TIERS = frozenset({"auto", "default", "flex"})
BUILT_IN_TOOLS = (
    "web_search",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use",
    "computer",
)


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not accepted here: {why}.", param, "unsupported_parameter")


def check_priced(tools: Any, params: dict[str, Any]) -> None:
    """Raise InvalidRequest naming the first parameter that would change the bill."""
    tier = params.get("service_tier")
    if tier is not None and tier not in PRICED_SERVICE_TIERS:
        raise _refuse("service_tier", f"{tier!r} is billed above the catalogue's prices")
    if params.get("audio") is not None:
        raise _refuse("audio", "audio tokens are billed at their own rates")
    modalities = params.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        raise _refuse("modalities", "audio output is billed at its own rates")
    if params.get("web_search_options") is not None:
        raise _refuse("web_search_options", "web searches are billed per call")
    if params.get("prediction") is not None:
        raise _refuse("prediction", "rejected predicted tokens are billed beyond max_tokens")
    if params.get("store") is True:
        raise _refuse("store", "a stored answer can be continued outside the reserved estimate")
    if params.get("background") is True:
        raise _refuse("background", "its usage arrives after the call is settled")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith(BUILT_IN_TOOLS):
            raise _refuse("tools", f"the built-in tool {kind!r} is billed per call")
