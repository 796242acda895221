from __future__ import annotations

from django.urls import path, re_path

from . import aio, catalogue, chat, embeddings, responses, views
from .dispatch import either

app_name = "quotas_v1"

urlpatterns = [
    # Sync DRF views under WSGI, async views under ASGI (see dispatch.either); the others
    # are sync views, which Django runs in a worker thread under ASGI.
    either(
        "chat/completions",
        chat.ChatCompletionsView.as_view(),
        aio.chat_completions,
        name="chat-completions",
    ),
    path("responses", responses.ResponsesView.as_view(), name="responses"),
    path("embeddings", embeddings.EmbeddingsView.as_view(), name="embeddings"),
    either("models", chat.ModelsView.as_view(), aio.models, name="models"),
    path("models/<path:model>", catalogue.ModelView.as_view(), name="model"),
    either("quota", views.QuotaView.as_view(), aio.quota, name="quota"),
    re_path(r"^.*$", views.not_found, name="not-found"),
]
