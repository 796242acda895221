from __future__ import annotations

from django.urls import path, re_path

from . import catalogue, chat, embeddings, responses, views

app_name = "quotas_v1"

urlpatterns = [
    path("chat/completions", chat.ChatCompletionsView.as_view(), name="chat-completions"),
    path("responses", responses.ResponsesView.as_view(), name="responses"),
    path("embeddings", embeddings.EmbeddingsView.as_view(), name="embeddings"),
    path("models", chat.ModelsView.as_view(), name="models"),
    path("models/<path:model>", catalogue.ModelView.as_view(), name="model"),
    path("quota", views.QuotaView.as_view(), name="quota"),
    re_path(r"^.*$", views.not_found, name="not-found"),
]
