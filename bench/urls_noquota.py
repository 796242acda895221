"""The project's /v1/ with the chat endpoint swapped for one without the quota path."""

from __future__ import annotations

from django.urls import include, path

from .noquota import UnmeteredChatView

urlpatterns = [
    path("v1/chat/completions", UnmeteredChatView.as_view()),
    path("v1/", include("quotas.api.urls")),
]
