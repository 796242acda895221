from __future__ import annotations

from django.urls import path, re_path

from . import chat, views

app_name = "quotas_v1"

urlpatterns = [
    path("chat/completions", chat.ChatCompletionsView.as_view(), name="chat-completions"),
    path("models", chat.ModelsView.as_view(), name="models"),
    path("quota", views.QuotaView.as_view(), name="quota"),
    re_path(r"^.*$", views.not_found, name="not-found"),
]
