"""Routing a model to the provider that serves it: a `Provider` row's OpenAI-compatible
endpoint, with the API key read from the environment variable it names."""

from __future__ import annotations

import os
import threading
from typing import Any

import openai

from .conf import conf
from .models import Provider


class MissingKey(Exception):
    """The environment variable a provider names for its key is not set."""

    def __init__(self, provider: Provider) -> None:
        super().__init__(
            f"The provider '{provider.name}' needs its API key in the environment variable "
            f"{provider.api_key_env}, which is not set on this server."
        )
        self.provider = provider


# A local endpoint without authentication still gets a key: the SDK insists on one.
NO_KEY = "none"

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], openai.OpenAI] = {}


def timeout(provider: Provider | None) -> float:
    if provider is not None and provider.timeout:
        return float(provider.timeout)
    return float(conf.UPSTREAM_TIMEOUT)


def client_settings(provider: Provider) -> dict[str, Any]:
    """`openai.OpenAI` settings for `provider`; raises MissingKey."""
    key = NO_KEY
    if provider.api_key_env:
        key = os.environ.get(provider.api_key_env, "")
        if not key:
            raise MissingKey(provider)
    return {
        "base_url": provider.base_url,
        "api_key": key,
        "timeout": timeout(provider),
        "max_retries": 0,
    }


def client_for(provider: Provider) -> openai.OpenAI:
    """This process's client for `provider` (a new one when its settings or key change)."""
    settings = client_settings(provider)
    identity = (provider.pk, *sorted(settings.items()))
    with _lock:
        client = _clients.get(identity)
        if client is None:
            client = _clients[identity] = openai.OpenAI(**settings)
        return client


def reset_clients() -> None:
    with _lock:
        _clients.clear()
