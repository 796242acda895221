from __future__ import annotations

from django.urls import path

from . import views

app_name = "quotas_v1"

urlpatterns = [
    path("quota", views.QuotaView.as_view(), name="quota"),
]
