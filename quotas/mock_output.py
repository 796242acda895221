"""What the mock provider answers: a tool call when a tool is asked for, JSON when a JSON
format is asked for, else the echoed text, cut at a `stop` sequence."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .tokens import count_text_tokens

# How deep a schema is followed for its minimal instance (a recursive schema ends there).
MAX_DEPTH = 16


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON


@dataclass(frozen=True)
class Answer:
    words: list[str]  # the text as its stream pieces (none for a tool call)
    tool_call: ToolCall | None
    cut_short: bool  # by the output cap

    @property
    def text(self) -> str:
        return "".join(self.words)

    def tokens(self, model: str) -> int:
        if self.tool_call is not None:
            return count_text_tokens(self.tool_call.name + self.tool_call.arguments, model)
        return count_text_tokens(self.text, model)


def minimal_instance(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """The smallest value a JSON schema accepts, every listed property filled in."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return minimal_instance(defs.get(ref.rsplit("/", 1)[-1]), defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return minimal_instance(schema[key][0], defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: minimal_instance(sub, defs, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = schema.get("minItems") or 0
        return [minimal_instance(schema.get("items"), defs, depth + 1) for _ in range(count)]
    if kind == "string":
        return "x" * (schema.get("minLength") or 0)
    if kind in ("integer", "number"):
        if isinstance(schema.get("minimum"), int | float):
            return schema["minimum"]
        low = schema.get("exclusiveMinimum")
        return low + 1 if isinstance(low, int | float) else 0
    if kind == "boolean":
        return False
    return None


def _function(tool: Any) -> tuple[str, Any] | None:
    """(name, parameters) of a function tool, in the chat or the Responses shape."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return None
    function = tool.get("function")
    spec: dict[str, Any] = function if isinstance(function, dict) else tool
    name = spec.get("name")
    return (name, spec.get("parameters")) if isinstance(name, str) else None


def asked_tool(tools: Any, tool_choice: Any, last: Any, text: str) -> tuple[str, Any] | None:
    """The function tool to call: the one `tool_choice` names or requires, else one whose
    name the last message (a user's, not a tool result) mentions."""
    functions = [f for f in map(_function, tools if isinstance(tools, list) else []) if f]
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        named = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
        return next((f for f in functions if f[0] == named), None)
    if tool_choice == "required":
        return functions[0]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None  # e.g. the tool's result came back: answer in text
    return next((f for f in functions if f[0].lower() in text.lower()), None)


def json_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """The asked JSON format: chat's `response_format`, the Responses API's `text.format`."""
    text = body.get("text")
    fmt = body.get("response_format") or (text.get("format") if isinstance(text, dict) else None)
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return fmt
    return None


def _cut_at_stop(words: list[str], stop: Any) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    text = "".join(words)
    ends = [text.find(s) for s in stops if isinstance(s, str) and s and s in text]
    if not ends:
        return words
    end, kept, length = min(ends), [], 0
    for word in words:
        if length + len(word) > end:
            kept.append(word[: end - length])
            break
        kept.append(word)
        length += len(word)
    return [w for w in kept if w]


def _reply_json(words: list[str]) -> str:
    return json.dumps({"reply": "".join(words).strip()})


def _fit(text: str, model: str, cap: int) -> tuple[str, bool]:
    """`text` cut to `cap` tokens, as a provider cuts an answer; whether it was cut."""
    if count_text_tokens(text, model) <= cap:
        return text, False
    while text and count_text_tokens(text, model) > cap:
        text = text[:-1]
    return text, True


def answer(
    body: dict[str, Any],
    messages: list[Any],
    model: str,
    words: list[str],
    cut_short: bool,
    cap: int,
) -> Answer:
    """The mock's answer to `body`, given the echoed reply `words` (cut to `cap` tokens)."""
    text = " ".join(str(m.get("content")) for m in messages[-1:] if isinstance(m, dict))
    last = messages[-1] if messages else None
    tool = asked_tool(body.get("tools"), body.get("tool_choice"), last, text)
    if tool is not None:
        arguments = json.dumps(minimal_instance(tool[1]) or {})
        return Answer([], ToolCall(tool[0], arguments), False)
    fmt = json_format(body)
    if fmt is not None:
        if fmt["type"] == "json_schema":
            value = minimal_instance((fmt.get("json_schema") or fmt).get("schema"))
        else:  # as much of the echo as fits the cap in valid JSON
            kept = list(words)
            while kept and count_text_tokens(_reply_json(kept), model) > cap:
                kept.pop()
            value = json.loads(_reply_json(kept))
        text, cut = _fit(json.dumps(value), model, cap)
        return Answer([text] if text else [], None, cut)
    kept = _cut_at_stop(words, body.get("stop"))
    return Answer(kept, None, cut_short and kept == words)
