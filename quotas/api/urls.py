from __future__ import annotations

from django.urls import re_path

from . import aio, chat, views
from .dispatch import either

app_name = "quotas_v1"

urlpatterns = [
    # Sync DRF views under WSGI, async views under ASGI (see dispatch.either).
    either(
        "chat/completions",
        chat.ChatCompletionsView.as_view(),
        aio.chat_completions,
        name="chat-completions",
    ),
    either("models", chat.ModelsView.as_view(), aio.models, name="models"),
    either("quota", views.QuotaView.as_view(), aio.quota, name="quota"),
    re_path(r"^.*$", views.not_found, name="not-found"),
]
